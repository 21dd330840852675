// Main returns without answering: the caller must get 480.
function Main() {
    var uri = PendingRequestData('Request-URI');
    return uri;
}
