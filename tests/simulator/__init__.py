"""The simulator on its own, driven by the official SDKs and raw HTTP: xai-api.md's wire format,
every fault. No relay here: these tests pin down what the relay's own tests can rely on."""
