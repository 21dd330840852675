// Answers and plays tone.wav in a loop until the caller hangs up; re-INVITEs (hold,
// resume) must not end the call. Also the long-running call for the SIGTERM test.
function Main() {
    AcceptCall();
    PlayFile('tone.wav', true);
    while (IsConnected()) {
        var evt = ReadInput(3600);
        if (evt !== null && IsDisconnectEvent(evt)) {
            break;
        }
    }
}
