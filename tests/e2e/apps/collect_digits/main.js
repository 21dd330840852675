// Collects key presses until '#' (RFC 4733 in RTP or SIP INFO: both are Dtmf events).
// Only when the caller keyed 42 does it play tone.wav (1 s); otherwise it hangs up at once.
function Main() {
    AcceptCall();
    var digits = '';
    while (IsConnected()) {
        var evt = ReadInput(5);
        if (evt === null || IsDisconnectEvent(evt)) {
            return;
        }
        if (IsDtmfEvent(evt)) {
            if (evt.digit === '#') {
                break;
            }
            digits += evt.digit;
        }
    }
    Log('collected', digits);
    if (digits !== '42') {
        Disconnect();
        return;
    }
    PlayFile('tone.wav');
    while (IsConnected()) {
        var e = ReadInput(10);
        if (e === null || IsPlayFileCompletedEvent(e) || IsDisconnectEvent(e)) {
            break;
        }
    }
}
