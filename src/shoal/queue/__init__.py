"""The NSQ data plane as pure cores: framing, commands, messages, topics and channels."""
