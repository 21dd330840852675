// Containment tests (tests/e2e/test_containment.py): one app, one behaviour per
// Request-URI user, so a misbehaving call can run next to ordinary ones on one switch.
// The test finds the loops' line numbers by their "LOOP:" comments: keep each loop on
// its own line.

// play: answer, play tone.wav in a loop until the caller hangs up (the ordinary call).
function play() {
    AcceptCall();
    PlayFile('tone.wav', true);
    waitForHangup();
}

// ring: ring (180) and never answer, until the caller gives up (CANCEL).
function ring() {
    ProvisionCall();
    waitForHangup();
}

// compute: answer and play, compute for 2 s without calling a verb (well under the CPU
// budget), then carry on with a verb: hang up. The caller's BYE >= 2 s after the answer
// shows the compute ran and the task continued.
function compute() {
    AcceptCall();
    PlayFile('tone.wav', true);
    var t = Date.now();
    while (Date.now() - t < 2000) {}  // LOOP: compute
    Disconnect();
}

// runaway: answer, then spin forever; whatever is thrown into the inner loop is caught
// and the loop starts again. Only an uncatchable stop ends it.
function runaway() {
    AcceptCall();
    while (true) { try { while (true) {} } catch (e) {} }  // LOOP: runaway
}

// spin: spin before answering; a `continue` in `finally` swallows any exception too.
function spin() {
    while (true) { try { while (true) {} } finally { continue; } }  // LOOP: spin
}

// bomb: answer, then allocate without bound (100 KB strings, all kept).
function bomb() {
    AcceptCall();
    var a = [];
    while (true) a.push(new Array(100000).join('x'));  // LOOP: bomb
}

// bomb_caught: answer, allocate without bound, catch the out-of-memory error and keep
// allocating.
function bomb_caught() {
    AcceptCall();
    var a = [];
    while (true) { try { a.push(new Array(100000).join('y')); } catch (e) {} }  // LOOP: bomb_caught
}

function waitForHangup() {
    while (IsConnected()) {
        var evt = ReadInput(3600);
        if (evt !== null && IsDisconnectEvent(evt)) break;
    }
}

var BEHAVIOURS = {play: play, ring: ring, compute: compute, runaway: runaway, spin: spin,
                  bomb: bomb, bomb_caught: bomb_caught};

function Main() {
    // sip:USER@host:port -> USER
    var uri = PendingRequestData('Request-URI') || '';
    var m = /^sips?:([^@;]+)@/.exec(uri);
    var behaviour = m ? BEHAVIOURS[m[1]] : undefined;
    if (behaviour === undefined) {
        RejectCall(404, 'No Such Behaviour');
        return;
    }
    behaviour();
}
