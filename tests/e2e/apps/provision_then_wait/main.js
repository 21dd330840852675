// Rings (180) and waits until the caller gives up (CANCEL -> disconnect event).
function Main() {
    ProvisionCall();
    while (IsConnected()) {
        var evt = ReadInput(30);
        if (evt !== null && IsDisconnectEvent(evt)) {
            break;
        }
    }
}
