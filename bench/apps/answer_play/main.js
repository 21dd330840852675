// Benchmark app: answer, play a 1 s tone in a loop, end when the caller hangs up.
function Main() {
    AcceptCall();
    PlayFile('tone.wav', true);
    while (IsConnected()) {
        var evt = ReadInput(3600);
        if (IsDisconnectEvent(evt)) break;
    }
}
