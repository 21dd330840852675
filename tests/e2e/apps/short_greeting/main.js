// The greeting flow with a 0.5 s file: the load test's app.
function Main() {
    AcceptCall();
    PlayFile('short.wav');
    while (IsConnected()) {
        var evt = ReadInput(3600);
        if (IsPlayFileCompletedEvent(evt) || IsDisconnectEvent(evt)) {
            break;
        }
    }
}
