#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/: the ids and decodings that Hugging Face
`tokenizers` gives for GPT-NeoX's tokenizer.json (the tokenizer of every
Mamba-1 checkpoint) and for a few variants of it, which tests/test_tokenizer.c
must reproduce exactly.

  cases.jsonl    one JSON object a line: variant, text, ids, decoded
                 (decoded = decode(ids, skip_special_tokens=False)); decode-only
                 cases have ids and decoded but no text
  variants.json  variant name -> edits to the base tokenizer.json: "top" keys
                 replaced, "model" keys replaced, "added_tokens" appended

With --tables it also rewrites src/tokenizer/unicode_classes.h, the letter,
number and word-character classes as HF tokenizers sees them, found by
probing its pre-tokenizer and added-token matcher with every code point
(their Unicode version is newer than that of the system's PCRE2).

usage: tools/make_tokenizer_fixtures.py [--tables] [TOKENIZER_JSON] [OUT_DIR]
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [a for a in sys.argv[1:] if a != "--tables"]
SRC = ARGS[0] if len(ARGS) > 0 else "/work/shared/data/gpt-neox-20b-tokenizer.json"
OUT = ARGS[1] if len(ARGS) > 1 else os.path.join(ROOT, "tests", "fixtures", "tokenizer")
TABLES = os.path.join(ROOT, "src", "tokenizer", "unicode_classes.h")

# ---- texts for the GPT-NeoX tokenizer as it is ----------------------------------

ASCII = [
    "", "a", "Hello", "Hello world", "Hello, world!",
    "The quick brown fox jumps over the lazy dog.", "UPPER lower MiXeD",
    "snake_case_name and camelCaseName", "https://example.com/path?q=1&r=2#frag",
    "email@example.org", "C:\\Windows\\System32", "def f(x):\n    return x * 2\n",
    "if (a != b) { c += 1; }", "<html><body>Hi</body></html>", "$100.00 or 99,99 EUR",
    "50% off!!!", "...", "?!?!", "a-b_c.d/e", "'quoted' and \"double\"", "#hashtag @mention",
    "~`^|\\", "a\x01b\x7fc\x1b[0m",
]
WHITESPACE = [
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "a\r\nb\r\n", " a", "a ", "a  ", "a   b",
    "a\n b", "a \nb", "a\t\tb", "line1\nline2\n", "trailing spaces   ", "\n\n\n\nmany newlines",
    " \t \n mixed \t\n", "word\u00a0nbsp", "x\u3000y", "a\u2028b", "a\u0085b", "a\u180eb",
    "a\u200bb", "a\u2009b", "tab\tat end\t", "\r\r\n\n\r", "\u00a0\u00a0x", "x \u00a0 y",
]
DIGITS = [
    "0", "12", "123", "1234567890", "3.14159", "1,000,000", "2024-01-01", "v1.2.3",
    "x2 + y3 = 42", "\u0661\u0662\u0663", "\u00bd and \u00b2 and \u216b", "99999999999999999999",
    "phone: +1 (555) 123-4567",
]
CONTRACTIONS = [
    "it's", "don't", "we're", "I've", "I'm", "we'll", "he'd", "IT'S", "DON'T", "We'RE", "I'M",
    "rock 'n' roll", "'s 't 're 've 'm 'll 'd", "''", "it\u2019s", "'S 'T 'Re 'VE 'M 'LL 'D",
    "y'all'd've", "x's's",
]
PUNCTUATION = [
    "Hello... World!!!", "(parenthetical) [bracket] {brace}", "a\u2014b\u2013c",
    "\u00abguillemets\u00bb", "\u00bfQu\u00e9?", "\u00a1Hola!", "**bold** _it_ `code`",
    "--flag=value", "a;b:c,d.e",
]
ACCENTS = [
    "caf\u00e9", "cafe\u0301", "na\u00efve", "nai\u0308ve", "\u00c5ngstr\u00f6m",
    "A\u030angstro\u0308m", "\u00e9", "e\u0301", "\u0301", "x\u0301\u0302", "k\u0301",
    "\u212b", "\ufb01ne", "\ud55c\uad6d\uc5b4", "\u1112\u1161\u11ab", "se\u0301ance \u00e9t\u00e9",
    "\u00e9\u0301", "o\u0308\u0304",
]
SCRIPTS = [
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u4e2d\u6587\u6587\u672c\uff0c\u6807\u70b9\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 123", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0939\u093f\u0928\u094d\u0926\u0940", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0e44\u0e17\u0e22", "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8",
]
EMOJI = [
    "\U0001f917", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "\u2764\ufe0f", "\U0001f600\U0001f603\U0001f604",
    "emoji \U0001f389 in text", "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5", "\U0001f9d1\U0001f3ff\u200d\U0001f4bb",
]
SPECIAL = [
    "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>", " <|endoftext|> ",
    "<|padding|>", "x<|padding|>y", "<|unk|>", "<|endoftext", "<|endoftext|", "<<|endoftext|>>",
    "e<|endoftext|>\u0301", "text<|endoftext|>\n\nmore text",
]
ODD = [
    "\ufeffBOM", "\ue000private", "\uffff", "\U0010ffff", "\u0378", "\U000e0001tag",
    "\U0001e030", "\u0600\u0601", "\u00ad soft hyphen", "\U0001d400\U0001d7ce",
]


def space_runs():
    out = []
    for n in (2, 3, 4, 5, 8, 16, 23, 24, 25, 26, 30, 48, 50):
        out.append("a" + " " * n + "b")
    out += ["   x", "x" + " " * 30, "\n" + " " * 8 + "code", "\t  \t", " " * 24 + "\n" + " " * 25]
    return out


def long_text():
    """About 10 kB mixing everything above, the same on every run."""
    rng = random.Random(20240601)
    pool = ASCII + WHITESPACE + DIGITS + CONTRACTIONS + PUNCTUATION + ACCENTS + SCRIPTS + EMOJI + SPECIAL
    parts, size = [], 0
    while size < 10000:
        p = rng.choice(pool)
        if rng.random() < 0.15:
            p += " " * rng.randint(2, 40)
        parts.append(p)
        size += len(p.encode())
    return "".join(parts)


# ---- variants: the same vocab and merges, other settings -------------------------------

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def added(content, **flags):
    tok = {"content": content, "single_word": False, "lstrip": False, "rstrip": False,
           "normalized": False, "special": False}
    tok.update(flags)
    return tok


VARIANTS = {
    "neox": {},
    "prefix_space": {"top": {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True,
                                               "trim_offsets": True, "use_regex": True}}},
    "split": {"top": {"normalizer": None, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}},
    "ignore_merges": {"model": {"ignore_merges": True}},
    "added_flags": {"added_tokens": [
        added("<mask>", lstrip=True, special=True),
        added("[R]", rstrip=True, special=True),
        added("<both>", lstrip=True, rstrip=True),
        added("cat", single_word=True, normalized=True),
        added("_w_", single_word=True),
        added("e\u0301te\u0301", normalized=True),
        added("\u00ff"),
        added(" \t"),
        added("\u00e9\u00e9", normalized=True, special=True),
        added("\t\t", lstrip=True),
    ]},
}

VARIANT_TEXTS = {
    "prefix_space": ["Hello", " Hello", "a<|endoftext|>b", "<|endoftext|>", "", "  x", "\nx",
                     "x" + " " * 5 + "y", "caf\u00e9 au lait"],
    "split": ["Hello world", "12345678", "it's IT'S We'Re", "a\n\n b", "   x  ", "foo.bar!!\n\n",
              "\U0001f917\U0001f917", "\u65e5\u672c\u8a9e", "a\u180eb\u2028c", "  \n  \n", "x\r\n\r\ny",
              "<|endoftext|>Hi", "$1,234.56", "cafe\u0301"],
    "ignore_merges": ["Hello world", "tokenization", " the", "internationalization", "a   b"],
    "added_flags": [
        "a <mask> b", "a   <mask>b", "<mask>", "x<mask>", "[R]   y", "[R]\n\nz", "cat", "a cat sat",
        "concatenate", "cat_", "cats", "the cat.", "\u00e9t\u00e9", "e\u0301te\u0301", "un \u00e9t\u00e9 chaud",
        "x <both>  y", "<both>", "_w_", "a _w_ b", "a_w_b", "\u00ff", "a\u00ffb", "<|endoftext|>\u00ff",
        "[R] \tx", "[R]  \t", "\u00e9\u00e9", "e\u0301e\u0301!", "<mask><mask>", " <mask> [R] ",
        "1cat", "\u00e9cat", "cat\u0301", "[R]\t\t", "[R]\t\tx", "[R] \t x", "a\t\tb", "a \t\t b",
    ],
}


def with_ids(base, spec):
    """spec with ids given to its added tokens: the vocab id, else the next free one."""
    spec = json.loads(json.dumps(spec))
    next_id = max(t["id"] for t in base["added_tokens"]) + 1
    for t in spec.get("added_tokens", []):
        if t["content"] in base["model"]["vocab"]:
            t["id"] = base["model"]["vocab"][t["content"]]
        else:
            t["id"], next_id = next_id, next_id + 1
    return spec


def edit(base, spec):
    """The base tokenizer.json with a variant's edits, as test_tokenizer.c makes it."""
    tj = json.loads(json.dumps(base))
    tj.update(spec.get("top", {}))
    tj["model"].update(spec.get("model", {}))
    tj["added_tokens"] += spec.get("added_tokens", [])
    return tj


def byte_level_chars():
    """GPT-2's byte -> character map, written from its definition."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7e or 0xa1 <= b <= 0xac or 0xae <= b <= 0xff]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_ids(tok, data):
    chars = byte_level_chars()
    return [tok.token_to_id(chars[b]) for b in data]


def decode_cases(tok):
    """Id sequences that decode to invalid UTF-8, and added tokens. (GPT-NeoX
    has no tokens for the bytes C0, C1 and F5-FF, which UTF-8 never uses.)"""
    cases = [byte_ids(tok, bytes(b)) for b in (
        [0xc3], [0xc3, 0x61], [0xe6, 0x97], [0xf0, 0x9f, 0x98], [0xed, 0xa0, 0x80], [0xc2, 0x41],
        [0xdf], [0x80, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe0, 0x80, 0x80], [0xf0, 0x9f],
        b"a\xe2\x82b", b"\xe2\x82\xac", b"\xe0\xa0", b"\xc3\xc3\xa9", b"\xef\xbb\xbf")]
    hello, world = tok.encode("Hello").ids, tok.encode(" world").ids
    cases += [hello + byte_ids(tok, b"\xc3") + world, [0], [50254], [0, 50276, 0], [1],
              tok.encode("\U0001f917").ids[:1], tok.encode("\u65e5\u672c").ids[:-1], []]
    return cases


# ---- character classes ----------------------------------------------------------------

def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def c_table(name, cps):
    rows = ["    " + " ".join("{0x%x, 0x%x}," % (lo, hi) for lo, hi in rs[i:i + 5])
            for rs in [ranges(cps)] for i in range(0, len(rs), 5)]
    return "static const tk_range %s[] = {\n%s\n};\n" % (name, "\n".join(rows))


def write_tables(base):
    cps = [c for c in range(0x110000) if not 0xd800 <= c < 0xe000]
    # ByteLevel's regex puts c in one piece with a letter (a digit) iff c is \p{L} (\p{N})
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    letter = [c for c in cps if len(bl.pre_tokenize_str("a" + chr(c))) == 1]
    is_letter = set(letter)
    number = [c for c in cps if c not in is_letter and len(bl.pre_tokenize_str("1" + chr(c))) == 1]
    # a single_word added token right after c is cut out iff c is not \w
    tj = json.loads(json.dumps(base))
    probe_id = max(t["id"] for t in tj["added_tokens"]) + 1
    tj["added_tokens"].append(dict(added("<q>", single_word=True), id=probe_id))
    tok = Tokenizer.from_str(json.dumps(tj))
    found = tok.encode_batch([chr(c) + "<q>" for c in cps])
    word = [c for c, e in zip(cps, found) if probe_id not in e.ids]
    import tokenizers
    with open(TABLES, "w", encoding="utf-8") as f:
        f.write("/* Generated by tools/make_tokenizer_fixtures.py --tables: do not edit.\n"
                " * Character classes as Hugging Face tokenizers %s sees them, probed code\n"
                " * point by code point: TK_LETTER and TK_NUMBER are \\p{L} and \\p{N} of its\n"
                " * pre-tokenizer regexes (Oniguruma), TK_WORD the \\w of its single_word rule\n"
                " * (the regex crate). */\n" % tokenizers.__version__)
        f.write("#ifndef CM_TOKENIZER_UNICODE_CLASSES_H\n#define CM_TOKENIZER_UNICODE_CLASSES_H\n\n"
                "#include <stdint.h>\n\ntypedef struct {\n    uint32_t lo, hi;\n} tk_range;\n\n")
        f.write(c_table("TK_LETTER", letter) + "\n" + c_table("TK_NUMBER", number) + "\n" +
                c_table("TK_WORD", word))
        f.write("\n#endif\n")
    print(f"{TABLES}: {len(letter)} letters, {len(number)} numbers, {len(word)} word characters")


def main():
    base = json.load(open(SRC, encoding="utf-8"))
    if "--tables" in sys.argv:
        write_tables(base)
    os.makedirs(OUT, exist_ok=True)
    lines = []

    def add(variant, tok, text=None, ids=None):
        if text is not None:
            ids = tok.encode(text).ids
        case = {"variant": variant}
        if text is not None:
            case["text"] = text
        case["ids"] = ids
        case["decoded"] = tok.decode(ids, skip_special_tokens=False)
        lines.append(json.dumps(case, ensure_ascii=True))

    neox = Tokenizer.from_str(json.dumps(base))
    groups = ASCII + WHITESPACE + DIGITS + CONTRACTIONS + PUNCTUATION + ACCENTS + SCRIPTS + EMOJI
    for text in groups + SPECIAL + ODD + space_runs() + [long_text()]:
        add("neox", neox, text)
    for ids in decode_cases(neox):
        add("neox", neox, ids=ids)
    variants = {name: with_ids(base, spec) for name, spec in VARIANTS.items()}
    for name, texts in VARIANT_TEXTS.items():
        tok = Tokenizer.from_str(json.dumps(edit(base, variants[name])))
        for text in texts:
            add(name, tok, text)
        if name == "added_flags":
            for content in ("\u00ff", "e\u0301te\u0301", "\u00e9\u00e9", " \t", "cat"):
                add(name, tok, ids=[tok.token_to_id(content)])

    with open(os.path.join(OUT, "cases.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "variants.json"), "w", encoding="utf-8") as f:
        json.dump(variants, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print(f"{len(lines)} cases written to {OUT}")


if __name__ == "__main__":
    main()
