"""Writes tests/data/thefuzz_token_set_ratio.tsv: (a, b, fuzz.token_set_ratio(a, b)) computed by the
real thefuzz package, which the WebShop reward uses. Kiln's port is checked against this table.

    python3 -m venv /tmp/fuzzvenv && /tmp/fuzzvenv/bin/pip install thefuzz
    /tmp/fuzzvenv/bin/python environments/tests/support/thefuzz_table.py > environments/tests/data/thefuzz_token_set_ratio.tsv
"""
import random
import sys
from importlib.metadata import version

from thefuzz import fuzz

HAND = [
    ("machine wash", "machine washable"), ("non slip", "slip resistant"), ("x-large", "large"),
    ("navy blue", "blue"), ("long lasting", "long-lasting"), ("gluten free", "sugar free"),
    ("fragrance free", "paraben free"), ("pack of 12", "12 pack"), ("high heel", "high heels"),
    ("Bluetooth 5.0", "bluetooth"), ("easy to clean", "easy clean"), ("water resistant", "waterproof"),
    ("12 ounce (pack of 2)", "12 ounce (pack of 3)"), ("queen", "king"), ("", ""), ("abc", ""),
    ("Café Crème", "cafe creme"), ("a_b", "a b"), ("noise cancelling", "noise canceling"),
    ("light grey", "grey"), ("dark brown", "brown dark"), ("size 9", "9"), ("8.5", "8 5"),
    ("hand wash only", "hand wash"), ("non gmo", "non-gmo"), ("low sugar", "low fat"),
    ("rubber sole", "rubber outsole"), ("lace up", "lace-up closure"), ("red", "rose red"),
    ("twin xl", "twin"), ("100% cotton", "cotton"), ("long sleeve", "short sleeve"),
    ("fast charging", "fast charger"), ("wireless", "wire less"), ("stainless steel", "steel stainless"),
    ("individually wrapped", "individual wrapping"), ("keto friendly", "keto"), ("6 ft", "10 ft"),
    ("moisture wicking", "moisture-wicking fabric"), ("vanilla", "french vanilla"),
]
WORDS = ("black white navy blue light grey red green large small x-large medium pack of 12 6 ounce "
         "free gluten sugar non slip water resistant long lasting machine wash easy clean high heel "
         "leather cotton steel wireless fast charging noise cancelling").split()

def random_phrase(rng):
    if rng.random() < 0.25:
        alphabet = "abcdefgh -_,.0129"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))

def main():
    rng = random.Random(5)
    pairs = list(HAND)
    while len(pairs) < 3000:
        pairs.append((random_phrase(rng), random_phrase(rng)))
    out = sys.stdout
    out.write(f"# thefuzz {version('thefuzz')} (rapidfuzz {version('rapidfuzz')}): a<TAB>b<TAB>token_set_ratio\n")
    for a, b in pairs:
        assert "\t" not in a + b and "\n" not in a + b
        out.write(f"{a}\t{b}\t{fuzz.token_set_ratio(a, b)}\n")

main()
