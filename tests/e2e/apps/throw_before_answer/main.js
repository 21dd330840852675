// Throws before answering: the caller must get 500.
function Main() {
    var who = PendingRequestData('From');
    throw new Error('boom before answer from ' + who);
}
