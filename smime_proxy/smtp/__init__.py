"""SMTP submission: the sans-I/O core (`session`: the decisions of a connection; `data`:
the DATA reader; `submission`: what a message becomes; `memo`, `keys`, `directory`) and the
I/O shell (`server`: aiosmtpd glue; `relay`: the upstream connection). See
`smime_proxy.smtp.session` for the behaviour on the wire.

May import: stdlib.
"""
