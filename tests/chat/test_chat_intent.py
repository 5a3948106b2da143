"""Auto mode's rules (`app.chat.intent.understand`): a table of phrasings and the task and input each means."""

from __future__ import annotations

import pytest

from app.chat.catalogue import get_chat_task
from app.chat.intent import Intent, understand

PHRASINGS: list[tuple[str, str, str]] = [
    # captions
    ("what's in this picture", "CAPTION", ""),
    ("What is in this image?", "CAPTION", ""),
    ("what do you see", "CAPTION", ""),
    ("caption it", "CAPTION", ""),
    ("Give me a caption", "CAPTION", ""),
    ("what is happening here?", "CAPTION", ""),
    ("summarize the photo briefly", "CAPTION", ""),
    ("Was ist auf dem Bild?", "CAPTION", ""),
    ("was siehst du", "CAPTION", ""),
    ("describe it in detail", "DETAILED_CAPTION", ""),
    ("Describe this image", "DETAILED_CAPTION", ""),
    ("a detailed description please", "DETAILED_CAPTION", ""),
    ("Beschreibe das Bild ausführlich", "DETAILED_CAPTION", ""),
    ("describe it in great detail", "MORE_DETAILED_CAPTION", ""),
    ("write a paragraph about this photo", "MORE_DETAILED_CAPTION", ""),
    ("tell me everything about this picture", "MORE_DETAILED_CAPTION", ""),
    # open-vocabulary detection
    ("describe the image and locate what you mention", "CAPTION_GROUNDING", ""),
    ("caption it and ground the phrases", "CAPTION_GROUNDING", ""),
    ("Describe it and point them out", "CAPTION_GROUNDING", ""),
    ("Beschreibe das Bild und zeige wo alles ist", "CAPTION_GROUNDING", ""),
    ("find the cars", "OPEN_VOCABULARY_DETECTION", "cars"),
    ("where are the cars", "OPEN_VOCABULARY_DETECTION", "cars"),
    ("Where is the cat?", "OPEN_VOCABULARY_DETECTION", "cat"),
    ("where's the red umbrella in this photo?", "OPEN_VOCABULARY_DETECTION", "red umbrella"),
    ("locate all the traffic lights", "OPEN_VOCABULARY_DETECTION", "traffic lights"),
    ("detect the helmets", "OPEN_VOCABULARY_DETECTION", "helmets"),
    ("show me the dog", "OPEN_VOCABULARY_DETECTION", "dog"),
    ("highlight the person on the left", "OPEN_VOCABULARY_DETECTION", "person on the left"),
    ("how many people are there?", "OPEN_VOCABULARY_DETECTION", "people"),
    ("Is there a dog?", "OPEN_VOCABULARY_DETECTION", "dog"),
    ("are there any bikes in the photo", "OPEN_VOCABULARY_DETECTION", "bikes"),
    ("count the birds in the image", "OPEN_VOCABULARY_DETECTION", "birds"),
    ("can you find a bicycle?", "OPEN_VOCABULARY_DETECTION", "bicycle"),
    ("please find the cat, dog", "OPEN_VOCABULARY_DETECTION", "cat, dog"),
    ("Finde die Autos", "OPEN_VOCABULARY_DETECTION", "Autos"),
    ("Find the cars in the sample street picture", "OPEN_VOCABULARY_DETECTION", "cars"),
    ("Wo ist die Katze?", "OPEN_VOCABULARY_DETECTION", "Katze"),
    ("zeig mir den Hund", "OPEN_VOCABULARY_DETECTION", "Hund"),
    # object detection
    ("Detect the objects in this image", "OD", ""),
    ("detect everything", "OD", ""),
    ("find all objects", "OD", ""),
    ("what objects are in the picture?", "OD", ""),
    ("list the things you can see", "OD", ""),
    ("object detection", "OD", ""),
    ("detect", "OD", ""),
    ("Erkenne alle Objekte", "OD", ""),
    # other box tasks
    ("caption each region", "DENSE_REGION_CAPTION", ""),
    ("describe every object separately", "DENSE_REGION_CAPTION", ""),
    ("region proposals", "REGION_PROPOSAL", ""),
    ("propose candidate boxes", "REGION_PROPOSAL", ""),
    ("ground: a man riding a horse", "CAPTION_TO_PHRASE_GROUNDING", "a man riding a horse"),
    ("grounding a dog next to a bike", "CAPTION_TO_PHRASE_GROUNDING", "a dog next to a bike"),
    # text
    ("read the text", "OCR", ""),
    ("What does the sign say?", "OCR", ""),
    ("transcribe it", "OCR", ""),
    ("OCR", "OCR", ""),
    ("read the text and where it is", "OCR_WITH_REGION", ""),
    ("read the text with regions", "OCR_WITH_REGION", ""),
    ("where is the text?", "OCR_WITH_REGION", ""),
    ("Lies den Text", "OCR", ""),
    ("Read the text in the sample sign picture", "OCR", ""),
    ("Was steht da geschrieben?", "OCR", ""),
    # segmentation
    ("segment the dog", "REFERRING_EXPRESSION_SEGMENTATION", "dog"),
    ("Segment the person in red", "REFERRING_EXPRESSION_SEGMENTATION", "person in red"),
    ("mask of the car on the right", "REFERRING_EXPRESSION_SEGMENTATION", "car on the right"),
    ("cut out the cat", "REFERRING_EXPRESSION_SEGMENTATION", "cat"),
    ("segmentiere die Katze", "REFERRING_EXPRESSION_SEGMENTATION", "Katze"),
    # regions
    ("what is in box 2", "REGION_TO_DESCRIPTION", "what is in box 2"),
    ("describe #1", "REGION_TO_DESCRIPTION", "describe #1"),
    ("read box 3", "REGION_TO_OCR", "read box 3"),
    ("what kind of thing is box 4?", "REGION_TO_CATEGORY", "what kind of thing is box 4?"),
    ("segment box 1", "REGION_TO_SEGMENTATION", "segment box 1"),
    ("10,20,200,180", "REGION_TO_DESCRIPTION", "10,20,200,180"),
    ("read the text in 10, 20, 200, 180", "REGION_TO_OCR", "read the text in 10, 20, 200, 180"),
    ("Was steht in Box 2?", "REGION_TO_OCR", "Was steht in Box 2?"),
    # classification
    ("classify", "CLASSIFY", ""),
    ("Classify this image", "CLASSIFY", ""),
    ("what ImageNet class is it?", "CLASSIFY", ""),
    ("Klassifiziere das Bild", "CLASSIFY", ""),
    ("is this a cat or a dog?", "ZERO_SHOT", "a cat, a dog"),
    ("Is it day, dusk or night?", "ZERO_SHOT", "day, dusk, night"),
    ("are these apples or oranges", "ZERO_SHOT", "apples, oranges"),
    ("classify as indoor or outdoor", "ZERO_SHOT", "indoor, outdoor"),
    ("Ist das eine Katze oder ein Hund?", "ZERO_SHOT", "eine Katze, ein Hund"),
    ("cat or dog?", "ZERO_SHOT", "cat, dog"),
    ("sunny, cloudy or rainy", "ZERO_SHOT", "sunny, cloudy, rainy"),
    ("read the text or describe it", "OCR", ""),
]


@pytest.mark.parametrize(("message", "task_key", "text"), PHRASINGS, ids=[p[0] for p in PHRASINGS])
def test_each_phrasing_picks_its_task_and_input(message: str, task_key: str, text: str) -> None:
    assert understand(message) == Intent(task_key, text)


def test_the_table_is_large_and_every_task_key_exists() -> None:
    assert len(PHRASINGS) >= 60
    assert sum(1 for m, _, _ in PHRASINGS if any(c in m for c in "äöüß") or m.split()[0] in GERMAN_LEADS) >= 8
    for _, key, _ in PHRASINGS:
        assert get_chat_task(key).key == key


GERMAN_LEADS = {"Was", "was", "Finde", "Wo", "zeig", "Erkenne", "Lies", "segmentiere", "Klassifiziere", "Ist"}


@pytest.mark.parametrize("message", ["", "   ", "hello", "thanks!", "ok go", "a dog on the ground next to a bike"])
def test_an_empty_or_unknown_message_runs_a_caption_and_says_it_was_not_recognised(message: str) -> None:
    assert understand(message) == Intent("CAPTION", recognised=False)


def test_the_description_names_the_task_and_its_input_as_plain_text() -> None:
    assert Intent("OPEN_VOCABULARY_DETECTION", "cars").described("Open-vocabulary detection") == (
        r"Open\-vocabulary detection of *cars*"
    )
    assert Intent("OPEN_VOCABULARY_DETECTION", "*x*").described("OVD") == r"OVD of *\*x\**"
    assert Intent("REGION_TO_OCR", "read box 3").described("Region to OCR") == "Region to OCR of box 3"
    assert Intent("REGION_TO_OCR", "1,2,3,4").described("Region to OCR") == "Region to OCR"
    assert Intent("CAPTION").described("Caption") == "Caption"
