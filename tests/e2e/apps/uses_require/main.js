// 603 can only come from lib/util.js (require works, exports are seen).
var util = require('lib/util.js');

function Main() {
    RejectCall(util.declineCode(), util.reason);
}
