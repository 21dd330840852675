// The seed's bridge ("Embedding JavaScript into Go", ITooLabs 2018), unmodified but for
// the slide's OCR typos (':' for ';', '.' for ','). The ingress task (Main) rings the
// caller, spawns an egress task with the dialled To header and offers it the call; the
// egress task places the outbound call bound to that bridge and gives up after 60 s.
// Both then sit in lib/call.js's process() until one side hangs up.
var call = require('lib/call.js');

function Main() {
    var dest = PendingRequestData('To');
    ProvisionCall();
    StartBridge(Spawn('egress', dest));
    call.process();
}

function egress(dest) {
    var bridge = ReadInput();
    StartBridgedCall(dest, bridge);
    var evt = ReadInput(60);
    if (!IsCallCompletedEvent(evt)) {
        RejectBridge(bridge);
    }
    call.process();
}
