# Types of the native module built from native/src/lib.rs (see smime_proxy/native.py).

from typing import TypeVar

INTERFACE: int
MAX_NESTING: int
MAX_PARTS: int

_Field = TypeVar("_Field", bound=tuple[str, bytes])
_ContentType = tuple[bytes, bytes | None, list[tuple[bytes, bytes]], int]
_Header = tuple[bytes, int, int, int, bool, bytes | None]
_Part = tuple[int, int, int, int, int, bytes | None, int, _ContentType | None, list[_Header]]

def parse_tree(message: bytes) -> list[_Part]: ...
def parse_top(message: bytes) -> tuple[_Part, list[tuple[int, int]]]: ...
def parse_content_type(value: bytes) -> _ContentType: ...

_Range = tuple[int, int]
_Recipient = tuple[int, _Range, _Range | None, _Range, _Range | None, _Range]
_Envelope = tuple[_Range, _Range, _Range | None, list[_Recipient], list[_Range], _Range | None,
                  bool]

def read_envelope(der: bytes) -> _Envelope | None: ...

_Signer = tuple[int, _Range, _Range | None, _Range, _Range | None, _Range, _Range, _Range,
                _Range | None]

def read_signed(der: bytes) -> tuple[_Range, list[_Range] | None, list[_Range],
                                     list[_Signer]] | None: ...

def render_structure(value: object) -> bytes | None: ...

def read_attributes(contents: bytes) -> list[tuple[_Range, list[_Range]]] | None: ...

def decode_base64(data: bytes, start: int) -> bytes | None: ...
def decrypt_content(mode: str, key: bytes, parameters: bytes, ciphertext: bytes,
                    tag: bytes) -> bytes | None: ...
def render_views(message: bytes) -> tuple[bytes | None, bytes | None]: ...
def header_fields(header: bytes, make: type[_Field]) -> tuple[_Field, ...]: ...
def has_bare_lf(data: bytes) -> bool: ...
