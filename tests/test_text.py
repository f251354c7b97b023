from common.text import content_hash, letter_count, normalise, paragraphs, tokens


def test_normalise_folds_case_width_and_white_space():
    assert normalise("  Hello\u00a0\tWORLD\n ") == "hello world"
    assert normalise("ＡＢＣ") == "abc"  # full-width forms


def test_content_hash_equal_for_formatting_variants_only():
    assert content_hash("Breaking  News\n") == content_hash("breaking news")
    assert content_hash("Breaking news") != content_hash("Breaking news!")


def test_tokens_keep_indic_words_whole_and_split_cjk():
    assert tokens("মার্কিন প্রেসিডেন্ট ডোনাল্ড") == ["মার্কিন", "প্রেসিডেন্ট", "ডোনাল্ড"]
    assert tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert tokens("東京都") == ["東", "京", "都"]
    assert tokens("U.S. President_Trump, 2025") == ["u", "s", "president", "trump", "2025"]


def test_paragraph_offsets_skip_blank_lines():
    text = "one\n\n  \ntwo two\n"
    spans = paragraphs(text)
    assert [text[s:e] for s, e in spans] == ["one", "two two"]


def test_letter_count_counts_marks_not_digits_or_punctuation():
    assert letter_count("ab, 12!") == 2
    assert letter_count("কি") == 2  # consonant + vowel sign
