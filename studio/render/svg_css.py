"""CSS for SVG documents: `<style>` sheets, `style` attributes, selectors and the cascade (CSS Cascade 4, Selectors 4).

What is read: rules `selector-list { declarations }` with type, universal (`*`), `#id`, `.class` and attribute
selectors (`[a]`, `[a=v]`, `[a~=v]`, `[a|=v]`, `[a^=v]`, `[a$=v]`, `[a*=v]`), the pseudo-classes `:first-child`,
`:last-child`, `:only-child` and `:root` (the dynamic `:hover`, `:active` and `:focus` never match a still
drawing), the combinators descendant (space), child (`>`), next sibling (`+`) and subsequent sibling (`~`),
specificity and `!important`. Comments are skipped; `@charset` is skipped; every other at-rule (`@media`,
`@import`, ...), escapes, namespaces and pseudo-elements are refused with a `ValueError` naming them.

Every scan here is a single left-to-right pass (no regular expression on user text), and selector matching
spends from a `Budget` so a document cannot make it run long: a crafted sheet is refused, not waited for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_RULES = 4_000
MAX_SELECTORS = 4_000  # selectors in one sheet (`a, b {}` has 2); each is matched against every element
MAX_COMPOUNDS = 16  # compound selectors in one complex selector (`a > b c` has 3)
MAX_MATCH_STEPS = 2_000_000  # compound-selector tests summed over the document


class Budget:
    def __init__(self, limit: int = MAX_MATCH_STEPS) -> None:
        self.left = limit

    def spend(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise ValueError(f"SVG style sheet needs more than {MAX_MATCH_STEPS} selector tests to apply; "
                             "refusing to read it")


@dataclass
class Compound:
    tag: str | None = None  # None: any element (also for `*`)
    ids: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    attrs: list[tuple[str, str, str]] = field(default_factory=list)  # (name, operator or "", value)
    pseudos: list[str] = field(default_factory=list)


@dataclass
class Selector:
    compounds: list[Compound]
    combinators: list[str]  # between compounds i and i+1: " ", ">", "+", "~"
    specificity: tuple[int, int, int]


@dataclass
class Rule:
    selectors: list[Selector]
    declarations: list[tuple[str, str, bool]]  # (property, value, important)
    order: int


def strip_comments(text: str) -> str:
    out, pos = [], 0
    while True:
        i = text.find("/*", pos)
        if i < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:i])
        j = text.find("*/", i + 2)
        if j < 0:
            return "".join(out)
        out.append(" ")
        pos = j + 2


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quotes and parentheses, in one pass."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_declarations(text: str, what: str) -> list[tuple[str, str, bool]]:
    """`prop: value [!important]; ...` -> [(prop lower-cased, value, important)]; empty declarations skipped."""
    out = []
    for decl in _split_top(strip_comments(text), ";"):
        if not decl.strip():
            continue
        prop, colon, value = decl.partition(":")
        prop, value = prop.strip().lower(), value.strip()
        if not colon or not prop or not value:
            raise ValueError(f"SVG {what} declaration {decl.strip()[:60]!r} is not `property: value`")
        important = False
        bang = value.rfind("!")
        if bang >= 0 and value[bang + 1:].strip().lower() == "important":
            important, value = True, value[:bang].strip()
        if "!" in value or "\\" in value:
            raise ValueError(f"SVG {what} declaration {decl.strip()[:60]!r} is not supported (escapes or `!`)")
        out.append((prop, value, important))
    return out


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _name(s: str, i: int, sel: str) -> tuple[str, int]:
    j = i
    while j < len(s) and (s[j] in _NAME_CHARS or ord(s[j]) > 127):
        j += 1
    if j == i:
        raise ValueError(f"SVG style sheet selector {sel[:60]!r} is not supported (unexpected {s[i:i + 1]!r})")
    return s[i:j], j


_DYNAMIC = {"hover", "active", "focus", "focus-within", "focus-visible"}
_STRUCTURAL = {"first-child", "last-child", "only-child", "root"}


def parse_selector(sel: str) -> Selector:
    s = sel.strip()
    if not s:
        raise ValueError("SVG style sheet has an empty selector")
    compounds: list[Compound] = []
    combinators: list[str] = []
    i, cur, pending = 0, None, None

    def bad(why: str) -> ValueError:
        return ValueError(f"SVG style sheet selector {sel.strip()[:60]!r} is not supported ({why})")

    while i < len(s):
        ch = s[i]
        if ch in " \t\r\n>+~":
            comb = " "
            while i < len(s) and s[i] in " \t\r\n>+~":
                if s[i] != " " and s[i] not in "\t\r\n":
                    if comb != " ":
                        raise bad("two combinators in a row")
                    comb = s[i]
                i += 1
            if cur is None:
                raise bad("a combinator with nothing before it")
            if i >= len(s):
                if comb != " ":
                    raise bad("a combinator with nothing after it")
                break
            compounds.append(cur)
            cur, pending = None, comb
            continue
        if cur is None:
            cur = Compound()
            if pending is not None:
                combinators.append(pending)
                pending = None
            if len(compounds) >= MAX_COMPOUNDS:
                raise bad(f"more than {MAX_COMPOUNDS} compound selectors")
        if ch == "*":
            i += 1
            if i < len(s) and s[i] == "|":
                raise bad("namespaces")
        elif ch == "#":
            name, i = _name(s, i + 1, sel)
            cur.ids.append(name)
        elif ch == ".":
            name, i = _name(s, i + 1, sel)
            cur.classes.append(name)
        elif ch == "[":
            end = s.find("]", i)
            if end < 0:
                raise bad("unclosed [")
            body = s[i + 1:end].strip()
            i = end + 1
            name, j = _name(body, 0, sel)
            rest = body[j:].strip()
            if not rest:
                cur.attrs.append((name, "", ""))
                continue
            op = rest[:2] if rest[:1] in "~|^$*" else rest[:1]
            if op not in ("=", "~=", "|=", "^=", "$=", "*="):
                raise bad(f"attribute operator in [{body[:30]}]")
            value = rest[len(op):].strip()
            if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
                value = value[1:-1]
            elif value.endswith((" i", " s")) or any(c in value for c in "\"' "):
                raise bad(f"attribute value in [{body[:30]}]")
            cur.attrs.append((name, op, value))
        elif ch == ":":
            if s[i + 1:i + 2] == ":":
                raise bad("pseudo-elements")
            name, i = _name(s, i + 1, sel)
            name = name.lower()
            if i < len(s) and s[i] == "(":
                raise bad(f":{name}()")
            if name not in _DYNAMIC and name not in _STRUCTURAL:
                raise bad(f":{name}")
            cur.pseudos.append(name)
        elif ch in "|\\,{}()\"'":
            raise bad(f"{ch!r}")
        else:
            if cur.tag is not None or cur.ids or cur.classes or cur.attrs or cur.pseudos:
                raise bad("a type selector after other parts")
            name, i = _name(s, i, sel)
            if i < len(s) and s[i] == "|":
                raise bad("namespaces")
            cur.tag = name
    if cur is None:
        raise bad("nothing to match")
    compounds.append(cur)
    spec = (sum(len(c.ids) for c in compounds),
            sum(len(c.classes) + len(c.attrs) + len(c.pseudos) for c in compounds),
            sum(c.tag is not None for c in compounds))
    return Selector(compounds, combinators, spec)


def parse_stylesheet(text: str, first_order: int = 0) -> list[Rule]:
    """Rules of one `<style>` sheet, numbered from `first_order` in document order."""
    text = strip_comments(text)
    rules: list[Rule] = []
    selector_count = 0
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            break
        if text.startswith("<!--", pos) or text.startswith("-->", pos):  # legacy HTML comment markers
            pos += 4 if text.startswith("<!--", pos) else 3
            continue
        if text[pos] == "@":
            j = pos + 1
            while j < n and (text[j] in _NAME_CHARS):
                j += 1
            name = text[pos:j].lower()
            if name == "@charset":
                end = text.find(";", j)
                pos = n if end < 0 else end + 1
                continue
            raise ValueError(f"SVG style sheet at-rule {name} is not supported")
        brace = text.find("{", pos)
        if brace < 0:
            raise ValueError(f"SVG style sheet text {text[pos:pos + 40].strip()!r} is not a rule")
        close = text.find("}", brace)
        if close < 0:
            raise ValueError("SVG style sheet has an unclosed { block")
        body = text[brace + 1:close]
        if "{" in body:
            raise ValueError("SVG style sheet has nested blocks (CSS nesting is not supported)")
        prelude = text[pos:brace]
        if "}" in prelude:
            raise ValueError("SVG style sheet has an unmatched }")
        parts = _split_top(prelude, ",")
        selector_count += len(parts)
        if selector_count > MAX_SELECTORS:  # before parsing them: a crafted list costs no more than its counting
            raise ValueError(f"SVG style sheets hold more than {MAX_SELECTORS} selectors; refusing to read them")
        if any(not p.strip() for p in parts):
            raise ValueError("SVG style sheet has an empty selector")
        selectors = [parse_selector(p) for p in parts]
        rules.append(Rule(selectors, parse_declarations(body, "style sheet"), first_order + len(rules)))
        if len(rules) > MAX_RULES:
            raise ValueError(f"SVG style sheets hold more than {MAX_RULES} rules; refusing to read them")
        pos = close + 1
    return rules


class Matcher:
    """Matches selectors against ElementTree elements (`local` gives an element's SVG tag name)."""

    def __init__(self, root, local, budget: Budget | None = None) -> None:
        self.root, self.local = root, local
        self.parent: dict = {}
        self.siblings: dict = {}
        for el in root.iter():
            kids = [k for k in el if isinstance(k.tag, str)]
            for i, k in enumerate(kids):
                self.parent[k] = el
                self.siblings[k] = (kids, i)
        self.budget = budget or Budget()
        self._classes: dict = {}

    def _compound(self, c: Compound, el) -> bool:
        self.budget.spend()
        if c.tag is not None and self.local(el.tag) != c.tag:
            return False
        if c.ids and any(el.get("id") != i for i in c.ids):
            return False
        if c.classes:
            have = self._classes.get(id(el))
            if have is None:
                have = self._classes[id(el)] = frozenset((el.get("class") or "").split())
            if any(k not in have for k in c.classes):
                return False
        for name, op, value in c.attrs:
            v = el.get(name)
            if v is None:
                return False
            self.budget.spend(len(v) // 64)  # string tests cost by length: long attributes cannot multiply work
            if (op == "=" and v != value) or (op == "~=" and value not in v.split()) \
                    or (op == "|=" and v != value and not v.startswith(value + "-")) \
                    or (op == "^=" and (not value or not v.startswith(value))) \
                    or (op == "$=" and (not value or not v.endswith(value))) \
                    or (op == "*=" and (not value or value not in v)):
                return False
        for p in c.pseudos:
            if p in _DYNAMIC:
                return False
            kids, i = self.siblings.get(el, ([el], 0))
            if (p == "root" and el is not self.root) or (p == "first-child" and i != 0) \
                    or (p == "last-child" and i != len(kids) - 1) or (p == "only-child" and len(kids) != 1):
                return False
        return True

    def matches(self, sel: Selector, el) -> bool:
        memo: dict = {}

        def match(k: int, e) -> bool:
            key = (k, id(e))
            if key in memo:
                return memo[key]
            ok = self._compound(sel.compounds[k], e)
            if ok and k > 0:
                comb = sel.combinators[k - 1]
                ok = False
                if comb in " >":
                    p = self.parent.get(e)
                    while p is not None:
                        if match(k - 1, p):
                            ok = True
                            break
                        if comb == ">":
                            break
                        p = self.parent.get(p)
                else:
                    kids, i = self.siblings.get(e, ([e], 0))
                    for j in range(i - 1, -1 if comb == "~" else max(i - 2, -1), -1):
                        if match(k - 1, kids[j]):
                            ok = True
                            break
            memo[key] = ok
            return ok

        return match(len(sel.compounds) - 1, el)
