"""Sans-I/O IMAP wire core: framing, lexing, parsing and rendering. Stdlib only; never awaits."""
