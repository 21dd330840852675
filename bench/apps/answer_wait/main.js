// Benchmark app: answer and wait silently (an idle call: a task blocked in ReadInput).
function Main() {
    AcceptCall();
    while (IsConnected()) {
        var evt = ReadInput(3600);
        if (IsDisconnectEvent(evt)) break;
    }
}
