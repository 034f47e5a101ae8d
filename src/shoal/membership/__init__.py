"""SWIM with Lifeguard as a pure state machine, fed packets and time."""
