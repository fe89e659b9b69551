"""Tokenizer: words, FNV-1a subword hashing, determinism across processes, errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pixrank.text import Tokenizer, UnknownQueryError, char_ngrams, fnv1a_32, words


def test_fnv1a_reference_vectors():
    # published FNV-1a 32-bit test vectors (isthe.com/chongo/tech/comp/fnv)
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    assert fnv1a_32("foobar") == fnv1a_32(b"foobar")


def test_words_lowercase_and_hyphens():
    assert words("A Dark T-Shirt, please!") == ["a", "dark", "t-shirt", "please"]
    assert words("   ") == []
    with pytest.raises(TypeError):
        words(3)


def test_char_ngrams_boundaries():
    assert char_ngrams("tee", 3, 4) == ["<te", "tee", "ee>", "<tee", "tee>"]
    # the whole bracketed word is never an n-gram of itself
    assert "<ab>" not in char_ngrams("ab", 3, 5)


def _reference_ids(tok, text):
    """Independent re-derivation of the id layout."""
    out = []
    v = len(tok.vocab)
    for w in text.lower().replace(",", " ").split():
        if w in tok.vocab:
            out.append(tok.vocab.index(w))
        s = "<" + w + ">"
        for n in range(tok.min_n, tok.max_n + 1):
            for i in range(len(s) - n + 1):
                g = s[i:i + n]
                if g == s:
                    continue
                h = 0x811C9DC5
                for b in g.encode():
                    h = ((h ^ b) * 0x01000193) % 2**32
                if g in tok.seen_ngrams:
                    out.append(v + h % tok.buckets)
    return out


def test_fit_encode_layout():
    tok = Tokenizer.fit(["a dark ankle boot", "a light sneaker"], buckets=1024)
    assert tok.vocab == sorted({"a", "dark", "ankle", "boot", "light", "sneaker"})
    assert tok.num_ids == 6 + 1024
    for text in ["dark ankle boot", "dark boots", "sneakers, light", "snaeker"]:
        ids = tok.encode(text)
        assert ids.dtype == np.int64
        assert ids.tolist() == _reference_ids(tok, text)
        assert ids.min() >= 0 and ids.max() < tok.num_ids
    # the plural shares most n-grams with the known word
    a = set(tok.encode("boot").tolist())
    b = set(tok.encode("boots").tolist())
    assert len(a & b) >= 5


def test_encode_batch_csr():
    tok = Tokenizer.fit(["a dark ankle boot", "a light sneaker"])
    ids, off = tok.encode_batch(["dark boot", "light", "sneaker"])
    assert off.tolist()[0] == 0 and off[-1] == len(ids) and len(off) == 4
    assert ids[off[1]:off[2]].tolist() == tok.encode("light").tolist()


def test_errors():
    tok = Tokenizer.fit(["a dark ankle boot"])
    with pytest.raises(ValueError, match="empty"):
        tok.encode("")
    with pytest.raises(ValueError, match="empty"):
        tok.encode("  \t ,! ")
    # letters outside ASCII are not "empty" text: the message says what a word is
    for text in ("靴", "é ü"):
        with pytest.raises(ValueError, match="no word this tokenizer reads.*ASCII letters"):
            tok.encode(text)
    with pytest.raises(UnknownQueryError, match="known"):
        tok.encode("zzqx vvyw")
    # n-grams are matched as strings: a bucket collision never makes gibberish "seen"
    big = Tokenizer.fit(["a dark ankle boot"], buckets=2)
    with pytest.raises(UnknownQueryError):
        big.encode("qqqq zzzz")
    with pytest.raises(TypeError):
        tok.encode(None)
    with pytest.raises(ValueError):
        Tokenizer(buckets=0)
    with pytest.raises(ValueError):
        Tokenizer(min_n=4, max_n=3)


def test_round_trip_and_determinism_across_processes(tmp_path):
    tok = Tokenizer.fit(["a dark ankle boot", "a light sneaker", "a medium t-shirt"])
    d = tok.to_dict()
    again = Tokenizer.from_dict(json.loads(json.dumps(d)))
    assert again == tok
    assert again.encode("dark sneakers").tolist() == tok.encode("dark sneakers").tolist()
    # a fresh interpreter (another PYTHONHASHSEED) gives the same ids
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(d))
    code = ("import json,sys; from pixrank.text import Tokenizer; "
            f"t=Tokenizer.from_dict(json.load(open({str(path)!r}))); "
            "print(t.encode('dark sneakers').tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "12345", **__import__('os').environ}, check=True)
    assert out.stdout.strip() == str(tok.encode("dark sneakers").tolist())
    with pytest.raises(ValueError):
        Tokenizer.from_dict({"format": "other"})


def test_error_messages_quote_a_long_text_shortened():
    # a megabyte query used to come back whole inside the exception message (and on the terminal)
    from pixrank.text.tokenizer import Tokenizer, UnknownQueryError
    tok = Tokenizer.fit(["a dark ankle boot", "a light bag"], buckets=64)
    for text, err, needle in (("q" * 1_000_000, UnknownQueryError, "none of the words in"),
                              ("!" * 500_000, ValueError, "is empty"),
                              ("靴" * 300_000, ValueError, "has no word this tokenizer reads")):
        with pytest.raises(err, match=needle) as info:
            tok.encode(text)
        msg = str(info.value)
        assert len(msg) < 400 and f"({len(text):,} characters)" in msg
    with pytest.raises(ValueError, match=r"the text '!!' is empty"):
        tok.encode("!!")  # short texts are quoted whole, as before
