// Main spawns Child(param); the child sends 'ping' {n: param.n + 1, child: ThisTask(),
// parent: ParentTask()} to its parent. Main checks the event and rejects with 400 + n:
// 441 proves Spawn, ParentTask, ThisTask, SendEvent and ReadInput together.
// Other codes say what went wrong:
//   420 ParentTask() of the root task is not null   421 no event within 5 s
//   422 the event is not 'ping'                      423 child/parent tids don't match
function Child(param) {
    SendEvent(ParentTask(), 'ping', {n: param.n + 1, child: ThisTask(), parent: ParentTask()});
}

function payload(evt) {
    if (evt.param !== undefined) return evt.param;
    if (evt.data !== undefined) return evt.data;
    return evt;
}

function Main() {
    if (ParentTask() !== null) {
        RejectCall(420, 'Root Has Parent');
        return;
    }
    var child = Spawn('Child', {n: 40});
    var evt = ReadInput(5);
    if (evt === null || evt === undefined) {
        RejectCall(421, 'No Event');
        return;
    }
    if (evt.type !== 'ping' && evt.what !== 'ping' && evt.name !== 'ping') {
        RejectCall(422, 'Not Ping');
        return;
    }
    var p = payload(evt);
    if (String(p.child) !== String(child) || String(p.parent) !== String(ThisTask())) {
        RejectCall(423, 'Tid Mismatch');
        return;
    }
    RejectCall(400 + p.n, 'Ping ' + p.n);
}
