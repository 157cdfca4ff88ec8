// The equations of the Explanation pages: pymdownx.arithmatex (generic mode) wraps them in
// \( \) and \[ \] inside elements of class "arithmatex"; MathJax typesets only those.
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true},
  options: {ignoreHtmlClass: ".*", processHtmlClass: "arithmatex"},
};
