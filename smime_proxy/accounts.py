"""One identity per user: the canonical key-store user of a login, and the addresses a user
owns (DESIGN decision 13).

- `user(login)` applies the admin's `users.username_format`, written as Dovecot's
  `auth_username_format`: `%u` the whole login, `%n` its local part, `%d` its domain, `L`
  before a letter lower-cases it (`%Ln`: `Alice@Example.Test` and `alice` are one user `alice`).
  Every front (IMAP, SMTP, control) keys the key store and address book by this name, so the
  spellings the upstream accepts as one account reach one key. The default `%u` keeps the
  login as typed (right for an upstream that tells `Alice` from `alice`).
- `addresses(user)`: the admin's `users.addresses` map, else the user at each of
  `users.local_domains` (else at `control.mail_domain`); a login that is itself an address in
  a local domain owns that address. Never taken from what a login string claims otherwise.

May import: config, errors, stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smime_proxy.config import Config
from smime_proxy.errors import UsageError

_VARIABLE = re.compile(r"%(L?)([und%])")


@dataclass(frozen=True)
class Accounts:
    username_format: str = "%u"
    local_domains: tuple[str, ...] = ()
    address_map: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Accounts:
        users = config.users
        domains = users.local_domains or (
            (config.control.mail_domain,) if config.control.mail_domain else ())
        return cls(users.username_format, domains, dict(users.addresses))

    def user(self, login: str) -> str:
        """The key-store user of a login (`users.username_format`)."""
        local, at, domain = login.partition("@")

        def value(match: re.Match[str]) -> str:
            lower, name = match[1], match[2]
            if name == "%":
                return "%"
            text = {"u": login, "n": local, "d": domain if at else ""}[name]
            return text.lower() if lower else text

        result = _VARIABLE.sub(value, self.username_format)
        if not result:
            raise UsageError("the login gives an empty user name")
        return result

    def addresses(self, user: str) -> tuple[str, ...]:
        """The addresses `user` owns, lower-case; empty when the admin configured none."""
        if user in self.address_map:
            return self.address_map[user]
        if "@" in user:
            domain = user.rpartition("@")[2].lower()
            return (user.lower(),) if domain in self.local_domains else ()
        return tuple(f"{user.lower()}@{d}" for d in self.local_domains)

    def owns(self, user: str, address: str) -> bool:
        return address.strip().lower() in self.addresses(user)
