"""Records, prompt templates, dataset loaders, the prompt sampler and the synthetic demo task."""

from mm_gmpo.data.loaders import (
    LoadResult,
    default_data_dir,
    load_records,
    load_records_with_report,
)
from mm_gmpo.data.records import BadRecordError, ImageRef, Record
from mm_gmpo.data.sampler import PromptSampler
from mm_gmpo.data.synthetic import make_arithmetic_records
from mm_gmpo.data.templates import (
    TEMPLATES,
    PromptTemplate,
    apply_template,
    get_template,
    render_prompt,
)

__all__ = [
    "TEMPLATES",
    "BadRecordError",
    "ImageRef",
    "LoadResult",
    "PromptSampler",
    "PromptTemplate",
    "Record",
    "apply_template",
    "default_data_dir",
    "get_template",
    "load_records",
    "load_records_with_report",
    "make_arithmetic_records",
    "render_prompt",
]
