"""smime-proxy: transparent S/MIME for ordinary IMAP/SMTP clients, with user-held keys."""

__version__ = "0.1.0"
