// Logs who the switch admitted the call from (PendingRequestData('X-Softswitch-Caller'):
// trunk:NAME, user:NAME or local), answers, plays tone.wav (1 s of 440 Hz) and hangs up.
function Main() {
    Log('caller=' + PendingRequestData('X-Softswitch-Caller'));
    AcceptCall();
    PlayFile('tone.wav');
    while (IsConnected()) {
        var evt = ReadInput(5);
        if (evt === null || IsPlayFileCompletedEvent(evt) || IsDisconnectEvent(evt)) break;
    }
}
