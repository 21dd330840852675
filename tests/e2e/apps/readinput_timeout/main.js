// ReadInput(0.3) with nothing queued must return null after ~0.3 s:
//   408 = null after 0.25..2 s; 410 = it returned an event; 413 = wrong delay.
function Main() {
    var t0 = Date.now();
    var evt = ReadInput(0.3);
    var ms = Date.now() - t0;
    if (evt !== null && evt !== undefined) {
        RejectCall(410, 'Got An Event');
    } else if (ms < 250 || ms > 2000) {
        RejectCall(413, 'Waited ' + ms + ' ms');
    } else {
        RejectCall(408, 'Timed Out');
    }
}
