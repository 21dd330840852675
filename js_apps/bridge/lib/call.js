// The seed's call loop: wait while our leg is up; if it hangs up, tear the bridge down
// (the other side gets a break-bridge event); if the other side tore it down, hang up.
function process() {
    while (IsConnected()) {
        var evt = ReadInput(3600);
        if (IsDisconnectEvent(evt)) {
            BreakBridge();
            break;
        }
        if (IsBreakBridgeEvent(evt)) {
            Disconnect();
            break;
        }
    }
}

exports.process = process;
