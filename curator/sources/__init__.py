"""Problem-set loaders: read public datasets in their original formats into `problems`.

Each format reader yields :class:`Problem` records and reports bad records to a
:class:`Collector`, which either stops the load with an error naming the file and line
(the default) or keeps going and writes every rejected record with its reason to a rejects
file (``--skip-invalid``). A load writes all its problems in one transaction, so a failed
load stores nothing and a repeated load adds nothing (ids are content hashes).

The package, by concern:

* :mod:`~curator.sources.records`: the :class:`Problem` record, bad records and the
  collector, reading files, the field helpers every reader shares;
* :mod:`~curator.sources.context`: what a reader is given (:class:`LoadContext`, the field
  map, the split it chose) and the errata;
* one module per loader family: :mod:`~curator.sources.math_dataset` (MATH),
  :mod:`~curator.sources.word_problems` (GSM8K, SVAMP, MultiArith, ASDiv),
  :mod:`~curator.sources.generic` (any JSONL or Parquet with mapped fields);
* :mod:`~curator.sources.load`: the format table and :func:`load_problems`, which stores a
  load in one transaction.
"""

from curator.sources.records import (BadRecord, Collector, MAX_FIELD_CHARS, Problem, Rejected,
                                     SPLIT_NAMES, answer_value, check_source, default_rejects_path,
                                     format_number, guard_rejects, iter_jsonl, nothing_valid,
                                     numeric_answer, parse_level, read_json_document, read_text,
                                     record_rejects, split_from_file_name, split_from_path,
                                     text_field)
from curator.sources.context import FieldMap, LoadContext, SplitChoice, errata
from curator.sources.math_dataset import read_math
from curator.sources.word_problems import (asdiv_answers, element_lines, read_asdiv, read_gsm8k,
                                           read_multiarith, read_svamp)
from curator.sources.generic import read_jsonl, read_parquet
from curator.sources.load import (AnswerChange, GENERATED, LOAD_FORMATS, LoadReport,
                                  PROBLEM_COLUMNS, READERS, answer_changes,
                                  apply_answer_changes, insert_problems, load_problems,
                                  match_stored, problems_frame)

__all__ = ['AnswerChange', 'BadRecord', 'Collector', 'FieldMap', 'GENERATED', 'LOAD_FORMATS',
           'LoadContext', 'LoadReport', 'MAX_FIELD_CHARS', 'PROBLEM_COLUMNS', 'Problem', 'READERS',
           'Rejected', 'SPLIT_NAMES', 'SplitChoice', 'answer_changes', 'answer_value',
           'apply_answer_changes', 'asdiv_answers', 'check_source',
           'default_rejects_path', 'element_lines', 'errata', 'format_number',
           'guard_rejects', 'insert_problems', 'iter_jsonl', 'load_problems', 'match_stored',
           'nothing_valid', 'numeric_answer', 'parse_level', 'problems_frame',
           'read_asdiv', 'read_gsm8k', 'read_json_document', 'read_jsonl', 'read_math',
           'read_multiarith', 'read_parquet', 'read_svamp', 'read_text',
           'record_rejects', 'split_from_file_name', 'split_from_path', 'text_field']
