# MM-Lego pipeline. Run the demo with `snakemake --cores 2`; see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/cohort.smk"
include: "rules/slides.smk"
include: "rules/modalities.smk"


rule all:
    input:
        all_targets(),
    default_target: True
