// Answers, then throws: the switch must hang up with BYE.
function Main() {
    AcceptCall();
    ReadInput(0.5);
    throw new Error('boom after answer');
}
