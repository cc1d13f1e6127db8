"""Questions about chunks: the offline simulator, a chat model's questions, and the question-file format."""
from dmhelpers.questions.generate import generate_questions
from dmhelpers.questions.qrels import Relevance, check_question_lists, load_questions, save_questions, split_questions
from dmhelpers.questions.variety import REAL_SIBLINGS, Sibling, sibling_summary, siblings

__all__ = ["REAL_SIBLINGS", "Relevance", "Sibling", "check_question_lists", "generate_questions", "load_questions",
           "save_questions", "sibling_summary", "siblings", "split_questions"]
