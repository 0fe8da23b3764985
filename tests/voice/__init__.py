"""Voice over REST (text-to-speech, speech-to-text) through a real daemon and simulator."""
