// Starts Swagger UI on /docs. The page's only script of its own, loaded from
// a file so that the page's Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var spec = document.currentScript.getAttribute("data-spec-url");
  window.addEventListener("load", function () {
    window.ui = SwaggerUIBundle({
      url: spec,
      dom_id: "#swagger-ui",
      validatorUrl: null,
      displayOperationId: true,
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    });
  });
})();
