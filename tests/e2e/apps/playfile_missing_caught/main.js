// PlayFile of a missing file must throw a catchable Error naming the file. Only if it
// did does the caller hear tone.wav (1 s); otherwise the call ends silently at once.
function Main() {
    AcceptCall();
    var caught = false;
    try {
        PlayFile('nope.wav');
    } catch (e) {
        caught = String(e && e.message !== undefined ? e.message : e).indexOf('nope.wav') >= 0;
    }
    if (!caught) {
        Disconnect();
        return;
    }
    PlayFile('tone.wav');
    while (IsConnected()) {
        var evt = ReadInput(10);
        if (evt === null || IsPlayFileCompletedEvent(evt) || IsDisconnectEvent(evt)) {
            break;
        }
    }
}
