// toolgate's web inbox: live updates, relative times, and a check of
// edited arguments before they are sent. Every page works without it.
// Text from agents is only ever set with textContent, never as markup;
// the list is swapped in from server-rendered, escaped HTML.
'use strict';

(function () {
  var KINDS = [
    'call_requested', 'approval_requested', 'decision_recorded', 'approval_expired',
    'gate_verdict', 'tool_started', 'tool_finished', 'run_completed', 'run_failed',
    'grant_revoked'
  ];

  // The server's clock, so that ages agree with the server's.
  var skew = 0;
  var serverNow = Number(document.body.getAttribute('data-now'));
  if (serverNow > 0) skew = serverNow - Date.now();

  function age(then) {
    var s = Math.floor((Date.now() + skew - then) / 1000);
    if (s < 10) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function refreshAges(root) {
    var times = root.querySelectorAll('time[data-rel]');
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute('datetime'));
      if (!isNaN(at)) times[i].textContent = age(at);
    }
  }
  setInterval(function () { refreshAges(document); }, 15000);

  function setText(el, text) { if (el) el.textContent = text; }

  function follow(onEvent, onState) {
    if (!window.EventSource) return null;
    var source = new EventSource('/v1/events');
    KINDS.forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        var data = null;
        try { data = JSON.parse(event.data); } catch (e) { data = null; }
        onEvent(kind, data);
      });
    });
    source.addEventListener('open', function () { onState(true); });
    source.addEventListener('error', function () {
      onState(source.readyState === EventSource.OPEN);
    });
    return source;
  }

  // The list: refetch it when the log says something changed.
  var list = document.getElementById('approvals');
  if (list) {
    var live = document.getElementById('live');
    var seen = ids(list);
    var timer = null;
    var busy = false;
    var again = false;

    function ids(root) {
      var found = {};
      var items = root.querySelectorAll('li.item[data-id]');
      for (var i = 0; i < items.length; i++) found[items[i].getAttribute('data-id')] = true;
      return found;
    }

    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch(list.getAttribute('data-src'), { credentials: 'same-origin', headers: { Accept: 'text/html' } })
        .then(function (response) {
          if (response.redirected && response.url.indexOf('/inbox/login') !== -1) {
            setText(live, 'Your session has ended: reload the page to sign in again.');
            return null;
          }
          if (!response.ok) throw new Error('status ' + response.status);
          return response.text();
        })
        .then(function (html) {
          if (html === null) return;
          var focused = document.activeElement && list.contains(document.activeElement)
            ? document.activeElement.getAttribute('href') : null;
          // Markup the server rendered and escaped.
          list.innerHTML = html;
          var now = ids(list);
          var fresh = 0;
          Object.keys(now).forEach(function (id) {
            if (!seen[id]) {
              fresh++;
              var item = list.querySelector('li.item[data-id="' + CSS.escape(id) + '"]');
              if (item) item.classList.add('new');
            }
          });
          seen = now;
          if (fresh > 0) setText(live, fresh === 1 ? '1 new approval' : fresh + ' new approvals');
          if (focused) {
            var link = list.querySelector('a[href="' + CSS.escape(focused) + '"]');
            if (link) link.focus();
          }
        })
        .catch(function () { setText(live, 'Could not refresh the list; it will try again.'); })
        .then(function () {
          busy = false;
          if (again) { again = false; schedule(); }
        });
    }

    function schedule() {
      if (timer) clearTimeout(timer);
      timer = setTimeout(refresh, 150);
    }

    follow(function () { schedule(); }, function (open) {
      if (open) {
        if (live && live.textContent.indexOf('new') === -1) setText(live, 'Live: new requests appear as they come');
        live && live.setAttribute('data-live', 'on');
        schedule();
      } else if (live) {
        live.setAttribute('data-live', 'off');
        setText(live, 'Reconnecting…');
      }
    });
  }

  // An approval's page: say so when someone else changes it.
  var head = document.querySelector('[data-approval-id]');
  if (head) {
    var id = head.getAttribute('data-approval-id');
    var runId = head.getAttribute('data-run-id');
    var fingerprint = head.getAttribute('data-fingerprint');
    var status = head.getAttribute('data-status');
    var banner = document.getElementById('changed');
    var checking = false;

    function check() {
      if (checking) return;
      checking = true;
      fetch('/v1/approvals/' + encodeURIComponent(id), { credentials: 'same-origin' })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (approval) {
          if (!approval) return;
          if (approval.status === status && approval.fingerprint === fingerprint) return;
          banner.textContent = '';
          var p = document.createElement('p');
          p.className = 'notice-title';
          p.textContent = approval.status !== status
            ? 'This approval is now ' + approval.status + (approval.decided_by ? ' (by ' + approval.decided_by + ')' : '') + '.'
            : 'The arguments were edited since you opened this page.';
          var again = document.createElement('p');
          var link = document.createElement('a');
          link.href = location.pathname;
          link.textContent = 'Reload to see it as it stands';
          again.appendChild(link);
          banner.appendChild(p);
          banner.appendChild(again);
          banner.hidden = false;
          var buttons = document.querySelectorAll('.decide button');
          for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
        })
        .catch(function () {})
        .then(function () { checking = false; });
    }

    follow(function (kind, data) {
      if (!data || data.run_id === runId) check();
    }, function (open) {
      head.setAttribute('data-live', open ? 'on' : 'off');
      // Reconnected: what happened meanwhile is replayed, but look anyway.
      if (open) check();
    });
  }

  // Edited arguments: JSON, and the common JSON Schema keywords, checked
  // here so that mistakes show before anything is sent. The server checks
  // again, fully.
  var form = document.getElementById('approve-form');
  var args = document.getElementById('args');
  if (form && args) {
    var errors = document.getElementById('args-errors');
    var schema = {};
    try { schema = JSON.parse(args.getAttribute('data-schema') || '{}'); } catch (e) { schema = {}; }

    form.addEventListener('submit', function (event) {
      var submitter = event.submitter;
      if (!submitter || submitter.value !== 'edit') return;
      var problems = [];
      var value;
      try {
        value = JSON.parse(args.value);
      } catch (e) {
        problems.push('not valid JSON: ' + e.message);
      }
      if (problems.length === 0) {
        if (value === null || typeof value !== 'object' || Array.isArray(value)) {
          problems.push('the arguments must be one JSON object: { "name": value, … }');
        } else {
          validate(schema, value, '', problems);
        }
      }
      showProblems(problems);
      if (problems.length > 0) {
        event.preventDefault();
        args.focus();
      }
    });

    args.addEventListener('input', function () {
      if (args.getAttribute('aria-invalid') === 'true') showProblems([]);
    });

    function showProblems(problems) {
      errors.textContent = '';
      if (problems.length === 0) {
        args.removeAttribute('aria-invalid');
        return;
      }
      args.setAttribute('aria-invalid', 'true');
      var title = document.createElement('p');
      title.className = 'notice-title';
      title.textContent = 'Not sent: the arguments do not fit the tool\u2019s schema';
      var ul = document.createElement('ul');
      problems.forEach(function (problem) {
        var li = document.createElement('li');
        li.textContent = problem;
        ul.appendChild(li);
      });
      errors.appendChild(title);
      errors.appendChild(ul);
    }
  }

  function typeOf(value) {
    if (value === null) return 'null';
    if (Array.isArray(value)) return 'array';
    if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
    return typeof value;
  }

  function fits(type, value) {
    var actual = typeOf(value);
    return type === actual || (type === 'number' && actual === 'integer');
  }

  function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

  function at(path) { return path === '' ? 'the arguments' : path; }

  function validate(schema, value, path, problems) {
    if (schema === true || schema === undefined || schema === null) return;
    if (schema === false) { problems.push(at(path) + ': not allowed'); return; }
    if (typeof schema !== 'object') return;
    if (schema.type !== undefined) {
      var types = Array.isArray(schema.type) ? schema.type : [schema.type];
      if (!types.some(function (t) { return fits(t, value); })) {
        problems.push(at(path) + ': must be ' + types.join(' or ') + ', not ' + typeOf(value));
        return;
      }
    }
    if (schema.enum && !schema.enum.some(function (v) { return same(v, value); })) {
      problems.push(at(path) + ': must be one of ' + schema.enum.map(function (v) { return JSON.stringify(v); }).join(', '));
    }
    if (schema.const !== undefined && !same(schema.const, value)) {
      problems.push(at(path) + ': must be ' + JSON.stringify(schema.const));
    }
    if (typeof value === 'string') {
      var length = Array.from(value).length;
      if (schema.minLength !== undefined && length < schema.minLength) problems.push(at(path) + ': must be at least ' + schema.minLength + ' characters');
      if (schema.maxLength !== undefined && length > schema.maxLength) problems.push(at(path) + ': must be at most ' + schema.maxLength + ' characters');
      if (typeof schema.pattern === 'string') {
        try {
          if (!new RegExp(schema.pattern, 'u').test(value)) problems.push(at(path) + ': must match ' + schema.pattern);
        } catch (e) { /* a pattern this browser cannot read: the server checks it */ }
      }
    }
    if (typeof value === 'number') {
      if (schema.minimum !== undefined && value < schema.minimum) problems.push(at(path) + ': must be at least ' + schema.minimum);
      if (schema.maximum !== undefined && value > schema.maximum) problems.push(at(path) + ': must be at most ' + schema.maximum);
      if (typeof schema.exclusiveMinimum === 'number' && value <= schema.exclusiveMinimum) problems.push(at(path) + ': must be more than ' + schema.exclusiveMinimum);
      if (typeof schema.exclusiveMaximum === 'number' && value >= schema.exclusiveMaximum) problems.push(at(path) + ': must be less than ' + schema.exclusiveMaximum);
    }
    if (Array.isArray(value)) {
      if (schema.minItems !== undefined && value.length < schema.minItems) problems.push(at(path) + ': must have at least ' + schema.minItems + ' items');
      if (schema.maxItems !== undefined && value.length > schema.maxItems) problems.push(at(path) + ': must have at most ' + schema.maxItems + ' items');
      if (schema.items && typeof schema.items === 'object' && !Array.isArray(schema.items)) {
        value.forEach(function (item, i) { validate(schema.items, item, path + '[' + i + ']', problems); });
      }
    }
    if (typeOf(value) === 'object') {
      var properties = schema.properties || {};
      (schema.required || []).forEach(function (name) {
        if (!Object.prototype.hasOwnProperty.call(value, name)) problems.push(at(path) + ': ' + name + ' is required');
      });
      Object.keys(value).forEach(function (name) {
        var where = path === '' ? name : path + '.' + name;
        if (Object.prototype.hasOwnProperty.call(properties, name)) {
          validate(properties[name], value[name], where, problems);
        } else if (schema.additionalProperties === false) {
          problems.push(where + ': is not an argument of this tool');
        } else if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
          validate(schema.additionalProperties, value[name], where, problems);
        }
      });
    }
    (schema.allOf || []).forEach(function (sub) { validate(sub, value, path, problems); });
    if (Array.isArray(schema.anyOf)) {
      var any = schema.anyOf.some(function (sub) { var p = []; validate(sub, value, path, p); return p.length === 0; });
      if (!any) problems.push(at(path) + ': fits none of the allowed forms');
    }
    if (Array.isArray(schema.oneOf)) {
      var count = schema.oneOf.filter(function (sub) { var p = []; validate(sub, value, path, p); return p.length === 0; }).length;
      if (count !== 1) problems.push(at(path) + ': must fit exactly one of the allowed forms');
    }
  }
})();
