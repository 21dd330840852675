// Main returns right after answering: the switch must send BYE (after our ACK).
function Main() {
    AcceptCall();
}
