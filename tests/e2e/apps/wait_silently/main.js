// Answer, then wait in ReadInput without playing anything (a caller entering digits
// slowly, a long menu timeout) until the caller hangs up. What the caller receives
// meanwhile is the switch's media keepalive and RTCP, nothing the script sent.
function Main() {
    AcceptCall();
    while (IsConnected()) {
        var evt = ReadInput(120);
        if (IsDisconnectEvent(evt)) break;
    }
}
