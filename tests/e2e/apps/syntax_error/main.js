// Line 5 has a syntax error: every call must get 500 and the switch log must name
// main.js:5 (the switch keeps running).
function Main() {
    AcceptCall();
    var x = = 1;
}
