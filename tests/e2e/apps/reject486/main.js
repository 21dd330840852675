// The outcome depends on what the script read from the INVITE: 486 only when the To
// header names a "busy" user, 404 otherwise (so the test proves PendingRequestData works).
function Main() {
    var to = PendingRequestData('To');
    if (to !== null && to.indexOf('busy') >= 0) {
        RejectCall(486, 'Busy Here');
    } else {
        RejectCall(404, 'Not Found');
    }
}
