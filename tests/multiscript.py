"""A small multi-script test set, generated from a few sentences per script (no shared data).

`sentences(200)` mixes the words of each script's sentences with a fixed seed and adds edge cases:
repeated and odd whitespace, NFKC-sensitive characters, characters never seen in training, mixed scripts.
"""

import random

SCRIPTS = {
    "eng_Latn": ["The quick brown fox jumps over the lazy dog.", "Turkey is surrounded by seas on three sides.",
                 "Café owners in São Paulo said prices rose by 12% last year.",
                 "Don't forget: the meeting starts at 9:30 a.m. sharp!"],
    "rus_Cyrl": ["Съешь же ещё этих мягких французских булок, да выпей чаю.",
                 "Москва является столицей Российской Федерации.", "В начале войны подводные лодки шли по поверхности."],
    "ell_Grek": ["Η Ελλάδα είναι μια χώρα στη νοτιοανατολική Ευρώπη.", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
                 "Οι επιστήμονες μελετούν τη θάλασσα κάθε καλοκαίρι."],
    "arb_Arab": ["اللغة العربية هي إحدى أكثر اللغات انتشارا في العالم.", "ذهب الطالب إلى المدرسة في الصباح الباكر.",
                 "تقع مدينة القاهرة على ضفاف نهر النيل."],
    "heb_Hebr": ["עברית היא שפה שמית ממשפחת השפות האפרו-אסיאתיות.", "הילדים משחקים בגן הציבורי אחרי הצהריים.",
                 "ירושלים היא עיר עתיקה מאוד."],
    "hin_Deva": ["हिन्दी भारत की सबसे अधिक बोली जाने वाली भाषा है।", "बच्चे सुबह स्कूल जाते हैं और शाम को खेलते हैं।",
                 "दिल्ली भारत की राजधानी है।"],
    "tha_Thai": ["ภาษาไทยเป็นภาษาราชการของประเทศไทย", "นักเรียนไปโรงเรียนทุกวันในตอนเช้า",
                 "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"],
    "zho_Hans": ["中文是世界上使用人数最多的语言之一。", "学生们每天早上去学校上课。", "北京是中华人民共和国的首都。"],
    "kor_Hang": ["한국어는 대한민국과 조선민주주의인민공화국의 공용어이다.", "학생들은 매일 아침 학교에 간다.",
                 "서울은 대한민국의 수도이다."],
    "amh_Ethi": ["አማርኛ የኢትዮጵያ የሥራ ቋንቋ ነው።", "ተማሪዎቹ በየቀኑ ጠዋት ወደ ትምህርት ቤት ይሄዳሉ።",
                 "አዲስ አበባ የኢትዮጵያ ዋና ከተማ ናት።"],
}

# Ten more scripts, for tokenizers with a real multilingual vocabulary (SCRIPTS + these: 20 scripts).
MORE_SCRIPTS = {
    "jpn_Jpan": ["日本語は日本の公用語です。", "東京でカタカナとひらがなを勉強しています。"],
    "kat_Geor": ["საქართველო არის ქვეყანა კავკასიაში.", "თბილისი საქართველოს დედაქალაქია."],
    "hye_Armn": ["Հայաստանը լեռնային երկիր է։", "Երևանը Հայաստանի մայրաքաղաքն է։"],
    "ben_Beng": ["বাংলা ভাষা বাংলাদেশের রাষ্ট্রভাষা।", "ঢাকা বাংলাদেশের রাজধানী।"],
    "tam_Taml": ["தமிழ் ஒரு பழமையான மொழி.", "சென்னை தமிழ்நாட்டின் தலைநகரம்."],
    "tel_Telu": ["తెలుగు ఒక ద్రావిడ భాష.", "హైదరాబాద్ ఒక పెద్ద నగరం."],
    "guj_Gujr": ["ગુજરાતી ભારતની એક ભાષા છે.", "અમદાવાદ ગુજરાતનું મોટું શહેર છે."],
    "khm_Khmr": ["ភាសាខ្មែរជាភាសាផ្លូវការរបស់ប្រទេសកម្ពុជា។", "ភ្នំពេញជារាជធានី។"],
    "mya_Mymr": ["မြန်မာဘာသာစကားသည် ရုံးသုံးဘာသာစကား ဖြစ်သည်။", "ရန်ကုန်မြို့သည် ကြီးမားသည်။"],
    "sin_Sinh": ["සිංහල ශ්‍රී ලංකාවේ භාෂාවකි.", "කොළඹ විශාල නගරයකි."],
}

EDGE_CASES = [
    "", "   ", "  leading and trailing spaces  ", "tabs\tand\nnewlines\r\nmixed", "many     spaces   inside",
    "ﬁne ﬂour, ①②③, ＡＢＣ full width, Ⅻ, ½ and ㎏", "unseen characters: ☃ ✈ 🙂 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ",
    "mixed Москва and 北京 and القاهرة in one line", "e\u0301 combining accent vs é precomposed",
    "zero\u200bwidth\u200dchars and\u00a0no-break space", "Ｈｅｌｌｏ　ｗｏｒｌｄ（ideographic space）",
    "<s> literal specials </s> and <mask> inside", "a<mask>b <mask> c", "ALL CAPS AND 1234567890 digits",
]


def training_text() -> dict[str, list[str]]:
    """language -> lines to train a tokenizer on: each sentence, and shuffles of its words."""
    rng = random.Random(1)
    out = {}
    for lang, sents in SCRIPTS.items():
        lines = list(sents)
        words = [w for s in sents for w in s.split()]
        for _ in range(30):
            lines.append(" ".join(rng.sample(words, min(len(words), rng.randint(2, 8)))))
        out[lang] = lines
    return out


def sentences(n: int = 200, seed: int = 0) -> list[str]:
    """`n` test sentences: the edge cases, the originals, then random word mixes across all scripts."""
    rng = random.Random(seed)
    out = list(EDGE_CASES) + [s for sents in SCRIPTS.values() for s in sents]
    langs = list(SCRIPTS)
    while len(out) < n:
        k = rng.randint(1, 3)  # 1-3 scripts per sentence
        words = []
        for lang in rng.sample(langs, k):
            pool = [w for s in SCRIPTS[lang] for w in s.split()]
            words += rng.sample(pool, min(len(pool), rng.randint(1, 5)))
        sep = rng.choice([" ", " ", " ", "  ", "\t"])
        out.append(sep.join(words))
    return out[:n]


def twenty_scripts(n: int = 300, seed: int = 0) -> list[str]:
    """`sentences(n)` plus the sentences of MORE_SCRIPTS and random mixes of all 20 scripts."""
    rng = random.Random(seed)
    every = {**SCRIPTS, **MORE_SCRIPTS}
    out = sentences(n - 60, seed) + [s for sents in MORE_SCRIPTS.values() for s in sents]
    while len(out) < n:
        words = [w for lang in rng.sample(list(every), 3) for w in rng.choice(every[lang]).split()]
        out.append(" ".join(rng.sample(words, min(len(words), 6))))
    return out
