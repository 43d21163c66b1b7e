"""SMTP submission: the pure core (`data`, `submission`) and the I/O shell (`server`,
`relay`). See `smime_proxy.smtp.server` for the behaviour on the wire."""
