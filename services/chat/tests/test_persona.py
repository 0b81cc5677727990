from avatar_chat.context.persona import build_system_prompt
from avatar_chat.schemas import Scenario

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."


def test_persona_and_rules_without_scenario():
    prompt = build_system_prompt(PERSONA)
    assert PERSONA in prompt
    assert "# Scenario" not in prompt
    assert "Stay in character" in prompt
    assert "language the user writes in" in prompt
    assert "Never say or imply that you are an AI" in prompt


def test_only_the_given_scenario_fields_appear():
    prompt = build_system_prompt(PERSONA, Scenario(situation="호그와트 도서관", background="  "))
    assert "Situation: 호그와트 도서관" in prompt
    assert "Background" not in prompt and "talking with" not in prompt


def test_every_scenario_field_in_order():
    scenario = Scenario(opponent="헤르미온느", situation="도서관", background="마법 세계")
    prompt = build_system_prompt(f"  {PERSONA}\n", scenario)
    assert prompt.index("헤르미온느") < prompt.index("도서관") < prompt.index("마법 세계")
    assert prompt.startswith(f"# Character\n{PERSONA}\n")


def test_an_empty_scenario_adds_nothing():
    assert build_system_prompt(PERSONA, Scenario()) == build_system_prompt(PERSONA)
