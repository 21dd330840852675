// A CommonJS module: the code it computes decides the SIP response.
function declineCode() {
    return 600 + 3;
}
exports.declineCode = declineCode;
exports.reason = 'Decline';
