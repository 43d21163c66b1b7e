"""IMAP: the sans-I/O wire core (wire/), and later the proxy session and its I/O shell."""
