// The seed's greeting flow ("Embedding JavaScript into Go", ITooLabs 2018), unchanged
// in shape: answer, play a greeting, wait until it has been played or the caller hung up.
// When Main returns after answering, the switch sends BYE.
function Main() {
    AcceptCall();
    PlayFile('greeting.wav');
    while (IsConnected()) {
        var evt = ReadInput(3600);
        if (IsPlayFileCompletedEvent(evt) || IsDisconnectEvent(evt)) {
            break;
        }
    }
}
