"""The bundled models' cards state what their files store, and say what was changed after training."""

import pytest

from dessam.models.bundled import BUNDLED_MODEL_FILES, model_card
from dessam.models.model_file import read_model_file
from dessam.training.model_card import STATED_SETTINGS, stated_settings, stored_settings


@pytest.mark.parametrize("name", sorted(BUNDLED_MODEL_FILES))
def test_a_bundled_models_stored_post_processing_is_what_its_card_states(name):
    path = BUNDLED_MODEL_FILES[name]
    if not path.is_file():
        pytest.skip(f"{path.name} is not bundled in this installation")
    stored = stored_settings(read_model_file(path).config)
    stated = stated_settings(model_card(path).read_text(encoding="utf-8"))
    assert set(stated) == set(STATED_SETTINGS), f"{model_card(path)}: state {', '.join(STATED_SETTINGS)}"
    assert stated == pytest.approx(stored), f"{model_card(path)} states {stated}, {path.name} stores {stored}"


def test_the_statement_is_read_back_as_written():
    from dessam.config import Config
    from dessam.training.model_card import settings_section

    config = Config.compose("cpu").replace({"model.postprocess.score_threshold": None})
    assert stated_settings(settings_section(config)) == stored_settings(config)
