'use strict';
// The script include must parse as ES5: global-scope scripts on ServiceNow run as ES5.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const test = require('node:test');
const acorn = require('acorn');

const { SCRIPT } = require('./standin');

const ES5 = { ecmaVersion: 5, sourceType: 'script' };

test('the script include parses as ES5', () => {
  acorn.parse(fs.readFileSync(SCRIPT, 'utf8'), ES5);
});

test('the same check refuses what ES5 does not have', () => {
  const later = [
    'let a = 1;',
    'const a = 1;',
    'var f = () => 1;',
    'var s = `ticket ${n}`;',
    'class A {}',
    'var { a } = b;',
    'for (var x of y) {}',
    'function f(a = 1) {}',
    'var o = { m() {} };',
    'var o = { ...p };',
  ];
  for (const snippet of later) {
    assert.throws(() => acorn.parse(snippet, ES5), SyntaxError, snippet);
    // Positive control: each is valid later JavaScript, so only the version makes it fail.
    acorn.parse(snippet, { ecmaVersion: 'latest', sourceType: 'script' });
  }
});

test('it declares one Script Include named as ServiceNow expects', () => {
  const program = acorn.parse(fs.readFileSync(SCRIPT, 'utf8'), ES5);
  const [declaration, assignment] = program.body;
  assert.equal(program.body.length, 2);
  assert.equal(declaration.type, 'VariableDeclaration');
  assert.equal(declaration.declarations[0].id.name, 'AutopilotUnassign');
  const init = declaration.declarations[0].init;
  assert.equal(`${init.callee.object.name}.${init.callee.property.name}`, 'Class.create');
  assert.equal(assignment.expression.left.object.name, 'AutopilotUnassign');
  assert.equal(assignment.expression.left.property.name, 'prototype');
  const type = assignment.expression.right.properties.find((p) => p.key.name === 'type');
  assert.equal(type.value.value, 'AutopilotUnassign');
});
