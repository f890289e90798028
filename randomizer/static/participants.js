// Participant pages: one click per form (the server also ignores a second submission of
// the same form), and a print button for the confirmation. No inline script (CSP).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form.once").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button[type=submit]").forEach(function (button) {
        if (button.dataset.busy) { button.textContent = button.dataset.busy; }
        // Disable after the browser has collected the form data.
        setTimeout(function () { button.disabled = true; }, 0);
      });
    });
  });
  var print = document.getElementById("print-page");
  if (print) { print.addEventListener("click", function () { window.print(); }); }
});
