#!/usr/bin/env python3
"""gen_precis_tables.py - writes precis_tables.h, the Unicode data precis.c needs for the PRECIS Nickname
profile (RFC 8266) of the FreeformClass (RFC 8264): the FreeformClass disposition of every code point, the
few properties its contextual rules look at, canonical combining classes, NFKC decompositions and
compositions, lowercase mappings and the Zs spaces.

Only the standard library: every property comes from Python's unicodedata, so the tables are for the Unicode
version of the Python that runs this. Where unicodedata has no accessor for a property, it is derived below
from its Unicode definition, and each such derivation says so.

    python3 tools/gen_precis_tables.py > precis_tables.h
"""
import sys
import textwrap
import unicodedata as ud

MAX_CP = 0x110000


def is_surrogate(cp):
    return 0xD800 <= cp <= 0xDFFF


def gc(cp):
    return ud.category(chr(cp))


def name(cp):
    return ud.name(chr(cp), '')


# ---- properties unicodedata does not give -------------------------------------------------------------

def noncharacter(cp):
    """Noncharacter_Code_Point (PropList.txt): U+FDD0..U+FDEF and the last two code points of each plane."""
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


# The hand-listed properties below are those of Unicode 14.0 (PropList.txt, DerivedCoreProperties.txt); main()
# warns when Python's unicodedata is of another version, so that they get checked against its files.
LISTED_FOR_UNICODE = '14.0.0'

# Other_Default_Ignorable_Code_Point and Variation_Selector (PropList.txt), listed here because unicodedata
# has neither. Most of the Other_Default_Ignorable ranges are unassigned; unassigned wins over ignorable in
# the RFC 8264 algorithm anyway, they are listed for completeness.
OTHER_DEFAULT_IGNORABLE = [
    (0x034F, 0x034F),   # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),   # HANGUL CHOSEONG FILLER, HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),   # KHMER VOWEL INHERENT AQ, AA
    (0x2065, 0x2065),   # reserved
    (0x3164, 0x3164),   # HANGUL FILLER
    (0xFFA0, 0xFFA0),   # HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),   # reserved
    (0xE0000, 0xE0000), (0xE0002, 0xE001F), (0xE0080, 0xE00FF), (0xE01F0, 0xE0FFF),   # reserved
]
VARIATION_SELECTOR = [(0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF)]
# Prepended_Concatenation_Mark: format characters that are visible, so not ignorable
PREPENDED_CONCATENATION_MARK = [(0x0600, 0x0605), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891),
                                (0x08E2, 0x08E2), (0x110BD, 0x110BD), (0x110CD, 0x110CD)]
INTERLINEAR_ANNOTATION = (0xFFF9, 0xFFFB)
EGYPTIAN_FORMAT = (0x13430, 0x1343F)


def in_ranges(cp, ranges):
    return any(lo <= cp <= hi for lo, hi in ranges)


def default_ignorable(cp):
    """Default_Ignorable_Code_Point, as DerivedCoreProperties.txt derives it:
    Other_Default_Ignorable_Code_Point + Cf + Variation_Selector - White_Space - FFF9..FFFB
    - Egyptian hieroglyph format controls - Prepended_Concatenation_Mark.
    (No Cf code point is White_Space, so that subtraction is empty.)"""
    if in_ranges(cp, OTHER_DEFAULT_IGNORABLE) or in_ranges(cp, VARIATION_SELECTOR):
        return True
    if gc(cp) != 'Cf':
        return False
    return not (in_ranges(cp, [INTERLINEAR_ANNOTATION, EGYPTIAN_FORMAT]) or
                in_ranges(cp, PREPENDED_CONCATENATION_MARK))


def hangul_jamo(cp):
    """Hangul_Syllable_Type L, V or T (RFC 5892 2.9 OldHangulJamo): the conjoining jamo, which unicodedata
    names HANGUL CHOSEONG (L), HANGUL JUNGSEONG (V) and HANGUL JONGSEONG (T)."""
    n = name(cp)
    return n.startswith(('HANGUL CHOSEONG ', 'HANGUL JUNGSEONG ', 'HANGUL JONGSEONG '))


# ---- RFC 8264 section 8: the derived property of the FreeformClass ------------------------------------

# RFC 5892 2.6 Exceptions (F)
EXC_PVALID = {0x00DF, 0x03C2, 0x06FD, 0x06FE, 0x0F0B, 0x3007}
EXC_CONTEXTO = {0x00B7, 0x0375, 0x05F3, 0x05F4, 0x30FB} | set(range(0x0660, 0x066A)) | set(range(0x06F0, 0x06FA))
EXC_DISALLOWED = {0x0640, 0x07FA, 0x302E, 0x302F, 0x3031, 0x3032, 0x3033, 0x3034, 0x3035, 0x303B}
# RFC 5892 2.7 BackwardCompatible (G): empty
JOIN_CONTROL = {0x200C, 0x200D}   # Join_Control (PropList.txt)

# class values, as precis.c names them
C_VALID, C_CONTEXTJ, C_CONTEXTO, C_UNASSIGNED, C_CONTROL, C_IGNORABLE, C_NONCHAR, C_JAMO, C_PRIVATE, C_OTHER = \
    range(10)
CLASS_NAMES = ['VALID', 'CONTEXTJ', 'CONTEXTO', 'UNASSIGNED', 'CONTROL', 'IGNORABLE', 'NONCHARACTER',
               'HANGUL_JAMO', 'PRIVATE_USE', 'DISALLOWED']


def freeform_class(cp):
    """RFC 8264 section 8, in its order; PVALID and FREE_PVAL are both VALID here. The DISALLOWED outcomes
    are split by cause (control, ignorable, noncharacter, jamo, private use, other) only so that a refusal
    can say why."""
    c = gc(cp)
    if cp in EXC_PVALID:
        return C_VALID
    if cp in EXC_CONTEXTO:
        return C_CONTEXTO
    if cp in EXC_DISALLOWED:
        return C_OTHER
    if c == 'Cn' and not noncharacter(cp):                      # J Unassigned
        return C_UNASSIGNED
    if 0x21 <= cp <= 0x7E:                                      # K ASCII7
        return C_VALID
    if cp in JOIN_CONTROL:                                      # H JoinControl
        return C_CONTEXTJ
    if hangul_jamo(cp):                                         # I OldHangulJamo
        return C_JAMO
    if default_ignorable(cp):                                   # M PrecisIgnorableProperties
        return C_IGNORABLE
    if noncharacter(cp):
        return C_NONCHAR
    if c == 'Cc':                                               # L Controls
        return C_CONTROL
    if not is_surrogate(cp) and ud.normalize('NFKC', chr(cp)) != chr(cp):   # Q HasCompat
        return C_VALID
    if c in ('Ll', 'Lu', 'Lo', 'Nd', 'Lm', 'Mn', 'Mc'):         # A LetterDigits
        return C_VALID
    if c in ('Lt', 'Nl', 'No', 'Me'):                           # R OtherLetterDigits
        return C_VALID
    if c == 'Zs':                                               # N Spaces
        return C_VALID
    if c in ('Sm', 'Sc', 'Sk', 'So'):                           # O Symbols
        return C_VALID
    if c in ('Pc', 'Pd', 'Ps', 'Pe', 'Pi', 'Pf', 'Po'):         # P Punctuation
        return C_VALID
    if c == 'Co':
        return C_PRIVATE
    return C_OTHER                                              # Cf, Cs, Zl, Zp


# ---- what the contextual rules (RFC 5892 appendix A) look at ------------------------------------------
# Joining_Type (ArabicShaping.txt) and Script (Scripts.txt) are not in unicodedata. They matter only next to
# a ZERO WIDTH NON-JOINER, a GREEK LOWER NUMERAL SIGN, a HEBREW GERESH/GERSHAYIM or a KATAKANA MIDDLE DOT.

JT_U, JT_T, JT_D, JT_R, JT_L = range(5)
SC_NONE, SC_GREEK, SC_HEBREW, SC_KANA_HAN = range(4)


# Arabic letters whose Joining_Type neither their presentation forms nor their name give away
ARABIC_NAMELESS = {0x0674: JT_U,   # HIGH HAMZA
                   0x0675: JT_R, 0x0676: JT_R, 0x0677: JT_R,   # HIGH HAMZA ALEF, HIGH HAMZA WAW, U WITH HAMZA ABOVE
                   0x06C3: JT_R,   # TEH MARBUTA GOAL
                   0x06D5: JT_R}   # AE


def arabic_letter_types():
    """Joining_Type D/R of Arabic letters, read off the Arabic presentation forms: a letter that has an
    <initial> or <medial> form joins on both sides (D), one with only <isolated>/<final> forms joins on the
    right (R), one with only an <isolated> form does not join (U). Letters without presentation forms take
    the type of the letter their name builds on ("ARABIC LETTER REH WITH SMALL V" -> REH -> R), else D,
    which is what most Arabic letters are."""
    forms = {}
    for cp in list(range(0xFB50, 0xFE00)) + list(range(0xFE70, 0xFF00)):
        d = ud.decomposition(chr(cp)).split()
        if len(d) == 2 and d[0] in ('<initial>', '<medial>', '<final>', '<isolated>'):
            forms.setdefault(int(d[1], 16), set()).add(d[0])

    def from_forms(cp):
        f = forms.get(cp)
        if not f:
            return None
        if '<initial>' in f or '<medial>' in f:
            return JT_D
        if '<final>' in f:
            return JT_R
        return JT_U

    types = dict(ARABIC_NAMELESS)
    letters = [cp for cp in list(range(0x0600, 0x0700)) + list(range(0x0750, 0x0780)) + list(range(0x0870, 0x0900))
               if gc(cp) == 'Lo' and name(cp).startswith('ARABIC LETTER ')]
    for cp in letters:
        if cp in types:
            continue
        t = from_forms(cp)
        if t is None:
            base = name(cp)[len('ARABIC LETTER '):].split(' WITH ')[0]
            try:
                t = from_forms(ord(ud.lookup('ARABIC LETTER ' + base)))
            except KeyError:
                t = None
        types[cp] = JT_D if t is None else t
    return types


ARABIC_TYPES = None


def joining_type(cp):
    global ARABIC_TYPES
    if ARABIC_TYPES is None:
        ARABIC_TYPES = arabic_letter_types()
    if cp in ARABIC_TYPES:
        return ARABIC_TYPES[cp]
    if cp == 0x0640 or cp in JOIN_CONTROL:     # TATWEEL and ZWJ are Join_Causing, ZWNJ Non_Joining
        return JT_U
    n = name(cp)
    # NKo, Mongolian and Adlam letters are dual-joining (the Mongolian ALI GALI letters excepted); other
    # joining scripts (Syriac, Mandaic, Manichaean, ...) mix types unicodedata cannot tell apart, so they are
    # left non-joining: a ZWNJ next to them is refused unless it follows a virama.
    if gc(cp) == 'Lo' and (n.startswith('NKO LETTER ') or
                           (n.startswith('MONGOLIAN LETTER ') and 'ALI GALI' not in n)):
        return JT_D
    if gc(cp) in ('Lu', 'Ll') and n.startswith('ADLAM '):
        return JT_D
    if gc(cp) in ('Mn', 'Me', 'Cf'):            # ArabicShaping.txt: unlisted Mn, Me and Cf are Transparent
        return JT_T
    return JT_U


def script(cp):
    """Script Greek, Hebrew, or one of Hiragana/Katakana/Han, from the character name. The rules look at
    NFKC output only, where the Common-script characters named GREEK ... (numeral sign, question mark, ano
    teleia, dialytika tonos) never appear: NFKC maps each of them to something else."""
    n = name(cp)
    if not n or n.startswith('COMBINING '):
        return SC_NONE
    if n.startswith('GREEK '):
        return SC_GREEK
    if n.startswith('HEBREW '):
        return SC_HEBREW
    if cp in (0x30FB, 0x30FC, 0xFF65, 0xFF70):  # KATAKANA MIDDLE DOT, PROLONGED SOUND MARK: Common
        return SC_NONE
    if n.startswith(('HIRAGANA ', 'KATAKANA ', 'HALFWIDTH KATAKANA LETTER ', 'CIRCLED KATAKANA ')):
        return SC_KANA_HAN
    if n.startswith(('CJK UNIFIED IDEOGRAPH-', 'CJK COMPATIBILITY IDEOGRAPH-', 'CJK RADICAL ', 'KANGXI RADICAL ',
                     'HANGZHOU NUMERAL ')) or cp in (0x3005, 0x3007, 0x303B):
        return SC_KANA_HAN
    return SC_NONE


# ---- emitting ----------------------------------------------------------------------------------------

out = []


def emit(s=''):
    out.append(s)


def emit_comment(text):
    lines = textwrap.wrap(text, 105)
    for i, line in enumerate(lines):
        emit(('/* ' if i == 0 else ' * ') + line + (' */' if i == len(lines) - 1 else ''))


def emit_array(ctype, cname, values, fmt, per_line, comment):
    emit_comment(comment)
    emit('static const %s %s[%d] = {' % (ctype, cname, len(values)))
    for i in range(0, len(values), per_line):
        emit('    ' + ', '.join(fmt % v for v in values[i:i + per_line]) + ',')
    emit('};')
    emit()
    return len(values) * {'uint8_t': 1, 'uint16_t': 2, 'uint32_t': 4, 'uint64_t': 8}[ctype]


def step_table(value_of, bits):
    """[lo << bits | value]: value holds from lo up to the next entry's lo."""
    steps = []
    prev = None
    for cp in range(MAX_CP):
        v = value_of(cp)
        assert 0 <= v < (1 << bits)
        if v != prev:
            steps.append(cp << bits | v)
            prev = v
    return steps


def main():
    if ud.unidata_version != LISTED_FOR_UNICODE:
        print('warning: unicodedata is Unicode %s, the hand-listed properties are Unicode %s: check them'
              % (ud.unidata_version, LISTED_FOR_UNICODE), file=sys.stderr)
    total = 0
    emit('/* precis_tables.h - GENERATED by tools/gen_precis_tables.py from the unicodedata module of Python %d.%d.%d'
         % sys.version_info[:3])
    emit(' * (Unicode %s); do not edit. Regenerate with:  python3 tools/gen_precis_tables.py > precis_tables.h'
         % ud.unidata_version)
    emit(' * Included by precis.c only. Every step table is sorted [lo << bits | value]: value holds for lo up to')
    emit(' * the next entry\'s lo, found by binary search. */')
    emit('#ifndef COUPLET_PRECIS_TABLES_H')
    emit('#define COUPLET_PRECIS_TABLES_H')
    emit()
    emit('#include <stdint.h>')
    emit()
    emit('#define PRECIS_UNICODE_VERSION "%s"' % ud.unidata_version)
    emit()
    for i, n in enumerate(CLASS_NAMES):
        emit('#define PRECIS_C_%s %d' % (n, i))
    emit('#define PRECIS_JT_U %d  /* Joining_Type, as the ZWNJ rule needs it: U (or C), T, D, R, L */' % JT_U)
    emit('#define PRECIS_JT_T %d' % JT_T)
    emit('#define PRECIS_JT_D %d' % JT_D)
    emit('#define PRECIS_JT_R %d' % JT_R)
    emit('#define PRECIS_JT_L %d' % JT_L)
    emit('#define PRECIS_SC_GREEK %d  /* Script, as the CONTEXTO rules need it */' % SC_GREEK)
    emit('#define PRECIS_SC_HEBREW %d' % SC_HEBREW)
    emit('#define PRECIS_SC_KANA_HAN %d' % SC_KANA_HAN)
    emit()

    # FreeformClass disposition (4 bits) | joining type << 4 (3 bits) | script << 7 (2 bits)
    def prop(cp):
        return freeform_class(cp) | joining_type(cp) << 4 | script(cp) << 7
    steps = step_table(prop, 9)
    emit('#define PRECIS_PROP_BITS 9')
    total += emit_array('uint32_t', 'precis_prop', steps, '0x%08x', 8,
                        'FreeformClass disposition (bits 0-3, PRECIS_C_*), Joining_Type (bits 4-6), Script '
                        '(bits 7-8); RFC 8264 section 8, Joining_Type and Script derived as the generator says')

    steps = step_table(lambda cp: ud.combining(chr(cp)), 8)
    total += emit_array('uint32_t', 'precis_ccc', steps, '0x%08x', 8,
                        'Canonical_Combining_Class, step table [lo << 8 | ccc]')

    # NFKC full decompositions (Hangul syllables are done by arithmetic)
    keys, pool, bases = [], bytearray(), []
    for cp in range(MAX_CP):
        if is_surrogate(cp) or 0xAC00 <= cp <= 0xD7A3:
            continue
        d = ud.normalize('NFKD', chr(cp))
        if d == chr(cp):
            continue
        if len(keys) % 64 == 0:
            bases.append(len(pool))
        rel = len(pool) - bases[-1]
        assert rel < 2048
        keys.append(cp << 11 | rel)
        pool += d.encode('utf-8')
    assert len(pool) < 65536 - 2048
    if len(keys) % 64 == 0:
        bases.append(len(pool))
    keys.append(MAX_CP << 11 | (len(pool) - bases[-1]))   # sentinel: ends the last decomposition
    assert max(len(ud.normalize('NFKD', chr(k >> 11))) for k in keys[:-1]) <= 18
    emit('#define PRECIS_DECOMP_MAX 18  /* longest decomposition, in code points (U+FDFA) */')
    total += emit_array('uint32_t', 'precis_decomp_key', keys, '0x%08x', 8,
                        'code points whose NFKD differs from themselves (Hangul syllables aside), sorted: '
                        '[cp << 11 | offset into precis_decomp_pool relative to precis_decomp_base[i / 64]]; '
                        'a decomposition ends where the next entry\'s begins (the last entry is a sentinel)')
    total += emit_array('uint16_t', 'precis_decomp_base', bases, '%d', 12,
                        'offset into precis_decomp_pool of entry 64*i of precis_decomp_key')
    total += emit_array('uint8_t', 'precis_decomp_pool', list(pool), '0x%02x', 16,
                        'the full compatibility decompositions, in canonical order, as UTF-8')

    # canonical compositions: primary composites (two-code-point canonical decompositions that NFC keeps)
    comps = []
    for cp in range(MAX_CP):
        if is_surrogate(cp):
            continue
        d = ud.decomposition(chr(cp))
        if not d or d.startswith('<'):
            continue
        parts = [int(x, 16) for x in d.split()]
        if len(parts) == 2 and ud.normalize('NFC', chr(cp)) == chr(cp):
            # precis.c keeps a composite in its starter's place: both are starters
            assert ud.combining(chr(cp)) == 0 and ud.combining(chr(parts[0])) == 0
            comps.append(parts[0] << 42 | parts[1] << 21 | cp)
    comps.sort()
    total += emit_array('uint64_t', 'precis_comp', comps, '0x%016xull', 4,
                        'canonical compositions, sorted: [first << 42 | second << 21 | composite] '
                        '(Hangul syllables are done by arithmetic)')

    # lowercase: Python's str.lower() of each code point alone (the full toLowerCase mapping, no context)
    runs, special = [], []
    for cp in range(MAX_CP):
        if is_surrogate(cp):
            continue
        low = chr(cp).lower()
        if low == chr(cp):
            continue
        if len(low) > 1:
            assert len(low) == 2
            special.append((cp, ord(low[0]), ord(low[1])))
            continue
        delta = ord(low) - cp
        if runs:
            lo, cnt, stride, dl = runs[-1]
            if dl == delta and cnt < 1023:
                if cnt == 1 and cp - lo in (1, 2):
                    runs[-1] = (lo, 2, cp - lo, dl)
                    continue
                if cnt > 1 and cp == lo + cnt * stride:
                    runs[-1] = (lo, cnt + 1, stride, dl)
                    continue
        runs.append((cp, 1, 1, delta))
    total += emit_array('uint32_t', 'precis_lower_run', [lo << 11 | (st - 1) << 10 | cnt for lo, cnt, st, _ in runs],
                        '0x%08x', 8, 'lowercase (Python\'s str.lower() of each code point alone), sorted runs '
                        '[lo << 11 | (stride - 1) << 10 | count]: code points lo, lo + stride, ... (count of them) '
                        'map to themselves + precis_lower_delta[i]')
    emit('static const int32_t precis_lower_delta[%d] = {' % len(runs))
    for i in range(0, len(runs), 12):
        emit('    ' + ', '.join('%d' % r[3] for r in runs[i:i + 12]) + ',')
    emit('};')
    emit()
    total += 4 * len(runs)
    total += emit_array('uint32_t', 'precis_lower_two', [x for s in special for x in s], '0x%05x', 3,
                        'code points whose lowercase is two code points: [cp, first, second]...')

    spaces = [cp for cp in range(MAX_CP) if not is_surrogate(cp) and gc(cp) == 'Zs' and cp != 0x20]
    total += emit_array('uint32_t', 'precis_zs', spaces, '0x%04x', 8,
                        'General_Category Zs other than U+0020: the additional mapping rule maps them to U+0020')
    emit('/* %d bytes of tables */' % total)
    emit()
    emit('#endif')
    sys.stdout.write('\n'.join(out) + '\n')
    print('precis tables: %d bytes' % total, file=sys.stderr)


if __name__ == '__main__':
    main()
