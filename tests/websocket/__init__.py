"""WebSockets through a real daemon to the simulator (or a test upstream): the relay, Responses
turns, voice sessions, shutdown."""
