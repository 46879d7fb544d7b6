#!/usr/bin/env python3
"""Lists the C/C++ function definitions longer than a limit; exits 1 if there are any.

  tools/function_lengths.py [--limit N] [PATH...]

A function's length counts its lines from the one with its signature (after any template<...>
header and [[attributes]]) to the one with its closing brace. Lambdas and local classes inside a
function are part of it; a lambda a variable holds at namespace or class scope counts as a
function of its own. PATHs are files or folders (default: the whole repository but tests/, which
is exempt, and build folders). Exit status: 0 none too long, 1 some, 2 a file it cannot read or
whose braces do not balance.

It reads the code with a small tokenizer (comments, string, raw string and character literals,
digit separators and preprocessor lines are skipped) and a brace matcher that tells function
bodies from namespaces, classes, enums and brace initialisers by what comes before the brace:
fast enough to run before every build, and no compiler or compile_commands.json needed.
`--self-test` checks it against known snippets.
"""

import argparse
import os
import re
import sys

EXTENSIONS = (".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".hxx", ".ipp", ".tpp", ".inl")
# Top-level folders the default scope leaves out: tests are exempt, subprojects are not ours.
# build-matrix: CI builds and removes the matrix cells there while this runs (.ci/run).
SKIPPED_FOLDERS = {"tests", "subprojects", "build-matrix"}
STRING_PREFIXES = {"u8", "u", "U", "L", "R", "u8R", "uR", "UR", "LR"}
# A '(' after one of these is not a parameter list.
NOT_PARAMETERS = {"alignas", "__attribute__", "__declspec", "decltype", "noexcept", "sizeof",
                  "alignof", "requires", "static_assert", "throw"}
PUNCTUATION = ("...", "::", "->")
STRING = '"'  # the token a string literal becomes


class ParseError(Exception):
    pass


def tokenize(text):
    """Returns [(token, line)]: identifiers, numbers and punctuation; literals become STRING."""
    tokens = []
    i, line, n = 0, 1, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            at_line_start = True
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if c == "\\" and text.startswith("\n", i + 1):
            i += 1
            continue
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 2 if text.startswith("\\\n", i) else 1
                if text[i - 1] == "\n":
                    line += 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            line += text.count("\n", i, end)
            i = end
            continue
        if c == "#" and at_line_start:
            i, line = skip_directive(text, i, line)
            continue
        at_line_start = False
        if c.isalpha() or c == "_":
            m = re.compile(r"[A-Za-z_0-9]*").match(text, i)
            word = m.group()
            if m.end() < n and text[m.end()] in "\"'" and word in STRING_PREFIXES:
                tokens.append((STRING, line))
                i, line = skip_literal(text, m.end(), line, raw=word.endswith("R"))
                continue
            tokens.append((word, line))
            i = m.end()
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            # A pp-number: digit separators (1'000) and exponents (1e-3) included.
            m = re.compile(r"\.?[0-9](?:[eEpP][+-]|'[0-9A-Za-z_]|[0-9A-Za-z_.])*").match(text, i)
            tokens.append(("0", line))
            i = m.end()
            continue
        if c in "\"'":
            tokens.append((STRING, line))
            i, line = skip_literal(text, i, line, raw=False)
            continue
        for p in PUNCTUATION:
            if text.startswith(p, i):
                tokens.append((p, line))
                i += len(p)
                break
        else:
            tokens.append((c, line))
            i += 1
    return tokens


def skip_directive(text, i, line):
    """Skips a preprocessor line (continuations and comments in it too)."""
    n = len(text)
    while i < n and text[i] != "\n":
        if text.startswith("\\\n", i):
            i, line = i + 2, line + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            line += text.count("\n", i, end)
            i = end
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        else:
            i += 1
    return i, line


def skip_literal(text, i, line, raw):
    """Skips the string or character literal whose quote is at i; returns (end, line)."""
    quote = text[i]
    if raw and quote == '"':
        open_paren = text.find("(", i)
        delimiter = ")" + text[i + 1:open_paren] + '"'
        end = text.find(delimiter, open_paren)
        if open_paren < 0 or end < 0:
            raise ParseError(f"line {line}: unterminated raw string")
        end += len(delimiter)
        return end, line + text.count("\n", i, end)
    j = i + 1
    while j < len(text) and text[j] != quote:
        if text[j] == "\n":
            raise ParseError(f"line {line}: unterminated literal")
        j += 2 if text[j] == "\\" else 1
    return j + 1, line


class Scanner:
    """Walks the tokens of one file by scopes and collects (name, first line, last line) of
    every function definition."""

    OPEN = {"(": ")", "[": "]", "{": "}"}

    def __init__(self, tokens):
        self.tok = [t for t, _ in tokens] + [";", "}"]  # sentinels: never run off the end
        self.line = [l for _, l in tokens] + [tokens[-1][1] if tokens else 1] * 2
        self.n = len(tokens)
        self.functions = []

    def match(self, i):
        """Index of the bracket closing the one at i."""
        depth = []
        for j in range(i, self.n):
            t = self.tok[j]
            if t in self.OPEN:
                depth.append(self.OPEN[t])
            elif t in (")", "]", "}"):
                if not depth or depth.pop() != t:
                    raise ParseError(f"line {self.line[j]}: '{t}' does not match")
                if not depth:
                    return j
        raise ParseError(f"line {self.line[i]}: '{self.tok[i]}' is never closed")

    def skip_angles(self, i):
        """Index after the '>' closing the '<' at i, or i + 1 if this '<' is no bracket."""
        depth, j = 0, i
        while j < self.n:
            t = self.tok[j]
            if t == "<":
                depth += 1
            elif t == ">":
                depth -= 1
                if depth == 0:
                    return j + 1
            elif t in ("(", "["):
                j = self.match(j)
            elif t in ("{", "}", ";"):
                return i + 1
            j += 1
        return i + 1

    def scope(self, i, prefix, top=False):
        """Reads the declarations of a file, namespace or class body from i to its closing brace;
        returns the index after it. prefix names the enclosing classes ("A::B::")."""
        while i < self.n:
            t = self.tok[i]
            if t == "}":
                if top:
                    raise ParseError(f"line {self.line[i]}: '}}' closes nothing")
                return i + 1
            if t == ";":
                i += 1
            elif t in ("public", "private", "protected") and self.tok[i + 1] == ":":
                i += 2
            else:
                i = self.declaration(i, prefix)
        if not top:
            raise ParseError(f"a scope in {prefix or 'a namespace'} is never closed")
        return i

    def declaration_start(self, i):
        """Skips template<...> headers and [[attributes]] in front of a declaration."""
        while True:
            if self.tok[i] == "template" and self.tok[i + 1] == "<":
                i = self.skip_angles(i + 1)
            elif self.tok[i] == "[" and self.tok[i + 1] == "[":
                i = self.match(i) + 1
            else:
                return i

    def declaration(self, start, prefix):
        """Reads one declaration at namespace or class scope; returns the index after it."""
        start = self.declaration_start(start)
        d = Declaration(start)
        i = start
        while True:
            t = self.tok[i]
            if t in (";", "}"):
                return i + 1 if t == ";" else i
            if t == "operator":
                i, operator = self.skip_operator_name(i)
                qualified = d.word if d.word and d.word.endswith("::") else ""
                d.word = qualified + operator
                continue
            if t == "<" and d.initialiser is None and is_word(self.tok[i - 1]):
                i = self.skip_angles(i)
                continue
            if t in ("(", "["):
                if t == "(" and d.parameters is None and d.initialiser is None \
                        and self.tok[i - 1] not in NOT_PARAMETERS:
                    d.parameters, d.name = i, d.word
                i = self.match(i) + 1
                continue
            if t == "{":
                i = self.brace(d, i, prefix)
                if i < 0:  # a namespace or a function: the declaration ends with its brace
                    return -i
                continue
            d.see(t, i)
            i += 1

    def skip_operator_name(self, i):
        """Skips 'operator' and the operator's name; returns (index, name)."""
        j = i + 1
        if self.tok[j] == "(" and self.tok[j + 1] == ")":
            j += 2
        else:
            while self.tok[j] not in ("(", ";", "{", "}"):
                j += 1
        name = "".join(self.tok[i + 1:j])
        return j, "operator" + (" " + name if name and is_word(name) else name)

    def brace(self, d, i, prefix):
        """Decides what the top-level '{' at i opens and reads it. Returns the index after it,
        negated when the declaration ends there (namespace, linkage block, function)."""
        head = self.tok[d.start:i]
        if "namespace" in head or head == ["extern", STRING]:
            return -self.scope(i + 1, prefix)
        if d.initialiser is not None:
            if self.tok[d.initialiser + 1] == "[":  # a lambda held by a variable
                return -self.function(d.start, i, d.name, prefix)
            return self.match(i) + 1
        if d.class_key == "enum":
            return self.match(i) + 1
        if d.class_key in ("class", "struct", "union") and self.is_class_head(d.class_at + 1, i):
            d.class_key = "defined"
            return self.scope(i + 1, prefix + (d.class_name or d.word or "") + "::")
        if d.member_inits and (is_word(self.tok[i - 1]) or self.tok[i - 1] == ">"):
            return self.match(i) + 1  # a member's brace initialiser: a_{x}
        if d.parameters is not None:
            return -self.function(d.start, i, d.name, prefix)
        return self.match(i) + 1  # a variable's brace initialiser: int x{3};

    def is_class_head(self, i, end):
        """Whether tokens i..end (after the class key) name a class being defined, not declare a
        variable of it (struct timespec ts{};): one name, template arguments, final, a base."""
        words = 0
        while i < end:
            t = self.tok[i]
            if t == ":":
                return words <= 1
            if t == "[" or (t == "(" and i > 0 and self.tok[i - 1] in NOT_PARAMETERS):
                i = self.match(i) + 1
                continue
            if t == "<":
                i = self.skip_angles(i)
                continue
            if is_word(t) and t != "final" and t not in NOT_PARAMETERS \
                    and self.tok[i - 1] != "::":
                words += 1
            i += 1
        return words <= 1

    def function(self, start, i, name, prefix):
        end = self.match(i)
        while self.tok[end + 1] == "catch":  # a function-try-block's handlers
            end = self.match(self.match(end + 2) + 1)
        self.functions.append((prefix + (name or "?"), self.line[start], self.line[end]))
        return end + 1


class Declaration:
    """What a declaration at namespace or class scope has shown so far."""

    def __init__(self, start):
        self.start = start
        self.word = None         # the latest (qualified) name: A::B, ~A
        self.name = None         # the name before the parameter list or the '='
        self.parameters = None   # index of the top-level parameter list
        self.initialiser = None  # index of the top-level '='
        self.member_inits = False  # after the ':' of a constructor's "...) :"
        self.class_key = None    # class, struct, union, enum; "defined" after the body
        self.class_at = None
        self.class_name = None   # set at the ':' of a base clause

    def see(self, t, i):
        if t == "=" and self.initialiser is None and not self.member_inits:
            self.initialiser = i
            self.name = self.name or self.word
        elif t == ":" and self.parameters is not None and self.initialiser is None \
                and self.class_key is None:
            self.member_inits = True
        elif t == ":" and self.class_key is not None and self.class_name is None:
            self.class_name = self.word
        elif t in ("class", "struct", "union", "enum") and self.class_key is None \
                and self.parameters is None and self.initialiser is None:
            self.class_key, self.class_at = t, i
        elif t == "::":
            self.word = (self.word or "") + t
        elif is_word(t) or t == "~":
            if self.class_key in ("class", "struct", "union", "enum") and (
                    t == "final" or t == "class"):
                return  # keep the class's name
            if self.word and self.word.endswith(("::", "~")):
                self.word += t
            else:
                self.word = t


def is_word(t):
    return t[0].isalpha() or t[0] == "_"


def functions_in(text):
    scanner = Scanner(tokenize(text))
    scanner.scope(0, "", top=True)
    return scanner.functions


def default_files(root):
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            d for d in subfolders
            if not d.startswith(".")
            and not (folder == root and d in SKIPPED_FOLDERS)
            and not os.path.exists(os.path.join(folder, d, "meson-private")))
        for f in sorted(files):
            if f.endswith(EXTENSIONS):
                yield os.path.join(folder, f)


def files_in(paths):
    for path in paths:
        if os.path.isdir(path):
            for folder, subfolders, files in os.walk(path):
                subfolders.sort()
                for f in sorted(files):
                    if f.endswith(EXTENSIONS):
                        yield os.path.join(folder, f)
        else:
            yield path


def self_test():
    cases = {
        # name: (code, [(name, first, last)])
        "namespaces, classes, inline members, = default": (
            "namespace a::b {\nstruct S final : public B<S> {\n  S() = default;\n"
            "  int f() const {\n    return 1;\n  }\n private:\n  int x_{2};\n};\n}\n",
            [("S::f", 4, 6)]),
        "templates, lambdas, braces in literals and comments": (
            "template <class T,\n          class U = std::vector<int>>\n[[nodiscard]] T g(T t) {\n"
            "  auto l = [&](int) { return '{'; };  // }\n  const char* s = \"}}\";\n"
            "  /* { */ return R\"x(})\")x\"[0] + 1'000;\n}\nint h();\n",
            [("g", 3, 7)]),
        "constructor initialiser lists with braces": (
            "Foo::Foo(int a) noexcept\n    : a_{a}, b_(a), Base<int>{a} {\n  x();\n}\n"
            "Foo::~Foo() { }\n",
            [("Foo::Foo", 1, 4), ("Foo::~Foo", 5, 5)]),
        "initialisers, enums, extern C, operators, lambda variables": (
            "#define OPEN {\nenum class E : int { a, b };\n"
            "std::map<int, std::function<void()>> m{\n    {1, [] {}}};\nextern \"C\" {\nint c(void) { return 0; }\n}\n"
            "bool operator==(const A&, const A&) = default;\nA& A::operator=(const A&) {\n"
            "  return *this;\n}\nconst auto fn = [](int x) {\n  return x;\n};\n",
            [("c", 6, 6), ("A::operator=", 9, 11), ("fn", 12, 14)]),
    }
    failed = 0
    for title, (code, expected) in cases.items():
        got = functions_in(code)
        if got != expected:
            print(f"self-test '{title}': got {got}, expected {expected}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=70, help="most lines allowed (70)")
    parser.add_argument("--self-test", action="store_true", help="check the scanner and exit")
    parser.add_argument("paths", nargs="*", help="files or folders (default: all but tests/)")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if args.paths:
        files = list(files_in(args.paths))
    else:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        files = [os.path.relpath(f) for f in default_files(root)]
    status = 0
    too_long = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                functions = functions_in(f.read())
        except OSError as e:
            print(f"{path}: cannot read it: {e}", file=sys.stderr)
            status = 2
            continue
        except ParseError as e:
            print(f"{path}: cannot tell its functions apart: {e}", file=sys.stderr)
            status = 2
            continue
        for name, first, last in functions:
            if last - first + 1 > args.limit:
                too_long.append((path, first, name, last - first + 1))
    for path, first, name, lines in too_long:
        print(f"{path}:{first}: {name} is {lines} lines (limit {args.limit})")
    if too_long:
        print(f"function_lengths: {len(too_long)} function(s) over {args.limit} lines: split them",
              file=sys.stderr)
    return status or (1 if too_long else 0)


if __name__ == "__main__":
    sys.exit(main())
