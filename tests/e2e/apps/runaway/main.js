// A script that never yields: after answering it spins without calling any verb.
function Main() {
    AcceptCall();
    var n = 0;
    while (true) { n++; }
}
