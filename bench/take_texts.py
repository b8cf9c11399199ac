"""Varied take-like texts for benchmarks: templates x topics x entities x phrasing.

Real takes are short opinionated posts about many subjects in many voices, so
their vectors spread over many directions with uneven density; a generator of
one cluster shape would make approximate search look easier than it is. Each
text draws a template (claim, question, reply, thread fragment, link share,
quote, list), a topic from several domains, entities, a stance and optional
noise (hashtags, numbers, dates, a second sentence); the draw is seeded, so
the same ``count`` and ``seed`` give the same texts.
"""

from __future__ import annotations

import random

TOPICS = {
    "ai policy": ["compute governance", "export controls on chips", "frontier model licensing", "AI safety institutes",
                  "open-weight releases", "model evaluations", "the EU AI Act", "liability for AI harms",
                  "watermarking generated content", "incident reporting", "red-teaming requirements", "AI and elections"],
    "ml research": ["scaling laws", "mixture of experts", "RLHF", "synthetic data", "benchmark contamination",
                    "long context windows", "retrieval augmentation", "interpretability", "distillation", "quantization",
                    "reasoning models", "agents that use tools"],
    "economy": ["labor market effects", "productivity statistics", "semiconductor supply chains", "data center power demand",
                "venture funding", "antitrust in cloud computing", "automation of call centers", "interest rates"],
    "science": ["protein folding", "climate models", "fusion energy", "drug discovery", "materials science",
                "weather forecasting", "genomics", "astronomy surveys"],
    "society": ["misinformation", "copyright and training data", "privacy", "education and homework", "deepfakes",
                "content moderation", "surveillance", "accessibility tools", "mental health apps"],
    "everyday": ["my commute", "the coffee machine at work", "a conference talk", "a podcast episode", "weekend hiking",
                 "a book I just finished", "the new phone", "cooking dinner", "learning to play guitar"],
    "security": ["bioweapons uplift", "cyber offense", "open source vulnerabilities", "jailbreaks", "model theft",
                 "insider threats", "supply chain attacks"],
}
ENTITIES = ["OpenAI", "Anthropic", "Google DeepMind", "Meta", "Mistral", "the White House", "Congress", "the UK government",
            "the European Commission", "China", "NIST", "the OECD", "Nvidia", "TSMC", "Microsoft", "Stanford", "MIT",
            "a startup in Berlin", "my lab", "the G7", "the UN", "Japan", "India", "Brazil", "Hugging Face", "EleutherAI"]
STANCES = ["I think", "I strongly believe", "Hot take:", "Unpopular opinion:", "I'm not sure, but", "It seems to me that",
           "Honestly,", "Data point:", "Reminder:", "Counterpoint:", "PSA:", "Genuinely curious:", ""]
VERBS = ["is underrated", "is overhyped", "matters more than people admit", "will look very different in five years",
         "needs better measurement", "is mostly a distraction", "is where the real action is", "deserves more funding",
         "is moving faster than policy", "is harder than it looks", "is going to surprise people", "is badly misunderstood"]
TEMPLATES = [
    "{stance} {topic} {verb}.",
    "{stance} {topic} {verb}, and {entity} should say so out loud.",
    "Why is nobody talking about how {topic} interacts with {topic2}?",
    "{entity} just published something on {topic}. My read: it {verb2}.",
    "Thread on {topic} ({n}/{m}): {stance} the key question is what {entity} does next.",
    "Reply: no, {topic} {verb}. Look at what happened with {topic2} in {year}.",
    "New paper from {entity} on {topic}: {number} experiments, one clear result, {topic2} {verb}.",
    "Quick list of things I learned about {topic} this week: 1) it {verb2} 2) {entity} is ahead 3) {topic2} is next.",
    "\"{topic} {verb}\" - {entity}, paraphrased. I half agree.",
    "If you work on {topic}, read this: {link}",
    "{stance} we keep arguing about {topic} when {topic2} {verb}.",
    "Spent the afternoon on {topic}. {entity} was right about one thing and wrong about {topic2}.",
    "Prediction for {year}: {topic} {verb} and {entity} changes its mind about {topic2}.",
    "lol {topic} again. {verb2}",
    "Question for people in {domain}: how do you think about {topic} vs {topic2}?",
    "A short note on {topic}. First, it {verb2}. Second, {entity} has the data. Third, {topic2} {verb}.",
]
TAILS = ["", "", "", " #AI", " #policy", " Thoughts?", " More soon.", " (via {entity})", " 🧵", " Source: {link}",
         " Not financial advice.", " Agree or disagree?", " This is a long one, sorry.", " h/t {entity}"]


def generate(count: int, seed: int = 0) -> list[str]:
    """``count`` take-like texts, the same ones for the same seed."""
    draw = random.Random(seed)
    domains = list(TOPICS)
    texts = []
    for _ in range(count):
        # Uneven popularity: a few domains and topics are talked about far more.
        domain = draw.choices(domains, weights=[6, 4, 2, 1, 3, 2, 1])[0]
        other = domain if draw.random() < 0.6 else draw.choice(domains)
        fields = {
            "stance": draw.choice(STANCES),
            "topic": draw.choice(TOPICS[domain]),
            "topic2": draw.choice(TOPICS[other]),
            "verb": draw.choice(VERBS),
            "verb2": draw.choice(VERBS),
            "entity": draw.choice(ENTITIES),
            "domain": domain,
            "year": draw.randint(2015, 2030),
            "number": draw.randint(2, 500),
            "n": draw.randint(1, 9),
            "m": draw.randint(9, 20),
            "link": f"https://example.org/{draw.randint(1000, 99999)}",
        }
        text = draw.choice(TEMPLATES) + draw.choice(TAILS)
        text = text.format(**fields).strip()
        if draw.random() < 0.25:
            text = text + " " + (draw.choice(TEMPLATES).format(**fields))
        if draw.random() < 0.1:
            text = text.lower()
        texts.append(text[0].upper() + text[1:] if text else text)
    return texts


def detail_vocabulary(size: int, seed: int = 0) -> list[str]:
    """``size`` distinct made-up words (two to four syllables), the same ones for the same seed."""
    draw = random.Random(seed)
    onsets = ["b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pl", "qu", "r", "s",
              "sh", "st", "t", "tr", "v", "w", "z"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
    codas = ["", "", "n", "r", "s", "l", "x", "m", "th"]
    words: dict[str, None] = {}
    while len(words) < size:
        word = "".join(draw.choice(onsets) + draw.choice(vowels) + draw.choice(codas) for _ in range(draw.randint(2, 4)))
        words[word] = None
    return list(words)


def with_details(texts: list[str], seed: int = 0, vocabulary_size: int = 50_000, per_take: tuple[int, int] = (2, 8)) -> list[str]:
    """``texts``, each with a few specific words appended, drawn Zipf-like from a large vocabulary.

    The templates above use a few hundred content words, so at 100k takes
    every query word is in 1-20% of them and a lexical search scores
    thousands of takes for any query. Real takes mix such common words with
    specific ones (names, jargon, places): by Heaps' law 100k takes of about
    30 words hold some 50,000 distinct words, most of them rare. The words
    are drawn with their own generator, so ``generate``'s texts (and vectors
    embedded from them) are unchanged.
    """
    draw = random.Random(f"details-{seed}")
    vocabulary = detail_vocabulary(vocabulary_size, seed)
    # Zipf's law (s = 1): the word of rank r is drawn with weight 1 / r.
    cumulative, total = [], 0.0
    for rank in range(1, vocabulary_size + 1):
        total += 1.0 / rank
        cumulative.append(total)
    low, high = per_take
    return [
        text + " " + " ".join(draw.choices(vocabulary, cum_weights=cumulative, k=draw.randint(low, high)))
        for text in texts
    ]
