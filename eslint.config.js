import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Layering: each folder may import only the folders listed for it (see docs/architecture.md).
const layers = {
  protocol: [],
  config: ['protocol'],
  engine: ['protocol', 'config'],
  store: ['protocol', 'config'],
  bus: ['protocol', 'config'],
  executor: ['engine', 'protocol', 'config'],
  agent: ['bus', 'protocol', 'config'],
  server: ['store', 'bus', 'protocol', 'config', 'engine'],
  doctor: ['agent', 'server', 'store', 'bus', 'engine', 'protocol', 'config'],
};
const all = ['protocol', 'config', 'engine', 'store', 'bus', 'executor', 'agent', 'server', 'doctor', 'cli'];

const layerRules = Object.entries(layers).map(([layer, allowed]) => ({
  files: [`src/${layer}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: all
          .filter((other) => other !== layer && !allowed.includes(other))
          .map((other) => ({
            group: [`../${other}`, `../${other}/*`, `../../${other}/*`],
            message: `src/${layer} must not import src/${other} (see docs/architecture.md)`,
          })),
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'bin/**', 'web/dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/require-await': 'off',
    },
  },
  ...layerRules,
  {
    // The portal runs in the browser: its own tsconfig (DOM, JSX), browser globals, and of our code it may
    // use only src/protocol, for types (it talks to the server over REST only).
    files: ['web/src/**/*.ts', 'web/src/**/*.tsx'],
    languageOptions: {
      parserOptions: { project: './web/tsconfig.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            ...all
              .filter((layer) => layer !== 'protocol')
              .map((layer) => ({
                group: [`**/src/${layer}`, `**/src/${layer}/*`],
                message: `web/ must not import src/${layer}: it talks to the server over REST (see docs/architecture.md)`,
              })),
            { group: ['node:*'], message: 'web/ runs in the browser' },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', 'vitest.config.ts', 'eslint.config.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: {
        process: 'readonly',
        console: 'readonly',
        performance: 'readonly',
        fetch: 'readonly',
        TextDecoder: 'readonly',
        setTimeout: 'readonly',
      },
    },
  },
);
