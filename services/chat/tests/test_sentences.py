from avatar_chat.speech.sentences import SentenceSplitter


def split_streamed(text: str, piece: int = 3) -> list[str]:
    splitter = SentenceSplitter()
    out = []
    for start in range(0, len(text), piece):
        out += splitter.feed(text[start : start + piece])
    return out + splitter.flush()


def test_korean_and_latin_sentences():
    text = "안녕! 오늘 날씨가 좋네요. 산책 갈까요? Sure, let's go."
    assert split_streamed(text) == [
        "안녕!",
        "오늘 날씨가 좋네요.",
        "산책 갈까요?",
        "Sure, let's go.",
    ]


def test_cjk_sentences_need_no_space():
    assert split_streamed("こんにちは。元気ですか？はい！") == [
        "こんにちは。",
        "元気ですか？",
        "はい！",
    ]


def test_the_first_cut_may_come_at_a_long_enough_clause():
    text = "음, 그러니까 말이지, 오늘은 정말 긴 하루였어. 내일 보자, 친구."
    assert split_streamed(text) == [
        "음, 그러니까 말이지,",
        "오늘은 정말 긴 하루였어.",
        "내일 보자, 친구.",
    ]


def test_a_sentence_is_not_cut_before_its_end_is_certain():
    splitter = SentenceSplitter()
    assert splitter.feed("Version 2.5 is out") == []  # "2." is not an end: no space follows
    assert splitter.feed(". Yes") == ["Version 2.5 is out."]
    assert splitter.flush() == ["Yes"]
